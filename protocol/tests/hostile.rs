//! The consumer against a hostile peer: arbitrary bytes written anywhere in
//! the region (header, control blocks, data), arbitrary indices, corrupted
//! valid streams, and arbitrary message payloads. Every outcome must be a
//! value or a typed error: a panic fails the property.
//!
//! Case counts are fixed below (override with PROPTEST_CASES); each property
//! prints how many cases ran.

use std::sync::atomic::{AtomicU64, Ordering};

use ktstr_protocol::codec;
use ktstr_protocol::layout::RING_CONTROL_SIZE;
use ktstr_protocol::message::{GuestMsg, HostMsg};
use ktstr_protocol::{SharedMapping, Shm, ShmLayout};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};

const REGION: usize = 64 * 1024;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Drains the consumer of a (possibly garbage) region, checking invariants.
fn drain(map: &SharedMapping) {
    let Ok(shm) = Shm::attach(map.region()) else {
        return;
    };
    for consumer in [shm.g2h_consumer(), shm.h2g_consumer()] {
        let Ok(mut rx) = consumer else { continue };
        let mut buf = Vec::new();
        let mut last = rx.position();
        for _ in 0..256 {
            match rx.try_recv(&mut buf) {
                Ok(true) => {
                    assert!(buf.len() <= rx.max_payload());
                    let _ = codec::decode::<GuestMsg>("guest msg", &buf);
                    let _ = codec::decode::<HostMsg>("host msg", &buf);
                }
                Ok(false) => break,
                Err(_) => {}
            }
            assert!(rx.position() >= last, "tail moved backwards");
            last = rx.position();
        }
    }
}

fn patches() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    prop::collection::vec(
        (0..REGION, prop::collection::vec(any::<u8>(), 1..64)),
        0..32,
    )
}

/// Runs `prop` over `cases` inputs from `strategy`, then reports and checks
/// how many ran.
fn run<S: Strategy>(
    name: &str,
    default_cases: u32,
    strategy: S,
    prop: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let cases = cases(default_cases);
    let ran = AtomicU64::new(0);
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        prop(v)
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let ran = ran.load(Ordering::Relaxed);
    eprintln!("{name}: {ran} cases, no panic");
    assert!(
        ran >= u64::from(cases),
        "{name}: only {ran} of {cases} cases ran"
    );
}

/// Random bytes patched anywhere into an initialised region.
#[test]
fn garbage_anywhere() {
    run("garbage_anywhere", 4000, patches(), |patches| {
        let map = SharedMapping::anonymous(REGION).unwrap();
        Shm::init(map.region(), ShmLayout::for_size(REGION as u64).unwrap()).unwrap();
        for (off, bytes) in &patches {
            let len = bytes.len().min(REGION - off);
            map.region().write(*off as u64, &bytes[..len]).unwrap();
        }
        drain(&map);
        Ok(())
    });
}

/// Arbitrary head/tail values over arbitrary ring data.
#[test]
fn arbitrary_indices() {
    let strategy = (
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 0..4096),
        any::<bool>(),
    );
    run(
        "arbitrary_indices",
        4000,
        strategy,
        |(head, tail, data, small)| {
            let map = SharedMapping::anonymous(REGION).unwrap();
            let shm = Shm::init(map.region(), ShmLayout::for_size(REGION as u64).unwrap()).unwrap();
            let desc = shm.layout().g2h;
            let (head, tail) = if small {
                (head % (2 * desc.capacity), tail % (2 * desc.capacity))
            } else {
                (head, tail)
            };
            map.region()
                .write(desc.offset + RING_CONTROL_SIZE, &data)
                .unwrap();
            map.region()
                .atomic_u64(desc.offset)
                .unwrap()
                .store(head, Ordering::Release);
            map.region()
                .atomic_u64(desc.offset + 64)
                .unwrap()
                .store(tail, Ordering::Release);
            drain(&map);
            Ok(())
        },
    );
}

/// A valid stream with bytes flipped in the data area afterwards: each
/// frame comes out intact or as an error, never as altered bytes.
#[test]
fn corrupted_stream() {
    let strategy = (
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2000), 1..40),
        prop::collection::vec((any::<usize>(), 1u8..=255), 0..8),
    );
    run("corrupted_stream", 4000, strategy, |(frames, flips)| {
        let map = SharedMapping::anonymous(REGION).unwrap();
        let shm = Shm::init(map.region(), ShmLayout::for_size(REGION as u64).unwrap()).unwrap();
        let mut tx = shm.h2g_producer().unwrap();
        let mut rx = shm.h2g_consumer().unwrap();
        let desc = shm.layout().h2g;
        let mut sent = Vec::new();
        for f in &frames {
            if tx.try_send(f).unwrap() {
                sent.push(f.clone());
            }
        }
        for (pos, mask) in &flips {
            let off = desc.offset + RING_CONTROL_SIZE + (*pos as u64 % desc.capacity);
            let mut b = [0u8];
            map.region().read(off, &mut b).unwrap();
            map.region().write(off, &[b[0] ^ mask]).unwrap();
        }
        let mut buf = Vec::new();
        let (mut idx, mut errors) = (0, 0);
        for _ in 0..(sent.len() + 2) {
            match rx.try_recv(&mut buf) {
                Ok(true) => {
                    // A delivered frame must be one of ours, in order (a crc
                    // collision on a flipped frame is a 2^-32 event).
                    let at = sent[idx..].iter().position(|f| f == &buf);
                    prop_assert!(at.is_some(), "altered or reordered frame delivered");
                    idx += at.unwrap_or(0) + 1;
                }
                Ok(false) => break,
                Err(_) => errors += 1,
            }
        }
        if flips.is_empty() {
            prop_assert_eq!(errors, 0);
            prop_assert_eq!(idx, sent.len());
        }
        Ok(())
    });
}

/// Arbitrary payloads never panic the message decoder.
#[test]
fn arbitrary_payloads_decode_or_error() {
    let strategy = prop::collection::vec(any::<u8>(), 0..512);
    run("arbitrary_payloads", 20000, strategy, |bytes| {
        let _ = codec::decode::<GuestMsg>("guest msg", &bytes);
        let _ = codec::decode::<HostMsg>("host msg", &bytes);
        Ok(())
    });
}
