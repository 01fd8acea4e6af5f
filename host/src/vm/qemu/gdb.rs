//! A small client for QEMU's gdbstub (`-gdb unix:...`), only for write
//! watchpoints: insert one (`Z2`), notice when one fires (a `T` stop reply
//! naming `watch:ADDR`), and let the guest go on (`c`).
//!
//! QEMU's stub stops the VM when a client connects and whenever a byte
//! arrives while it runs, so inserting a watchpoint is: interrupt (0x03)
//! if running, wait for the stop reply, `Z2`, `c`. QMP `stop`/`cont`
//! (our freezes) also make the stub send stop replies; those are read and
//! dropped. Packets are `$data#cs`; acks are turned off where the stub
//! knows `QStartNoAckMode`, else every packet it sends is acknowledged;
//! its own `+`s are skipped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::vm::VmError;

/// How long a command may wait for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// Most bytes one packet may have (QEMU's stub sends far less).
const MAX_PACKET: usize = 1 << 16;

/// A connection to the stub.
pub struct Gdb {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Whether we let the guest run (`c` sent, no stop reply since).
    running: bool,
    /// Whether packets from the stub must be acknowledged (`+`): until
    /// `QStartNoAckMode` is accepted (QEMU 7.2 does not know it).
    acks: bool,
}

fn err(what: impl std::fmt::Display) -> VmError {
    VmError::Qmp(format!("gdbstub: {what}"))
}

fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Frames `data` as a packet.
pub fn frame(data: &str) -> Vec<u8> {
    format!("${data}#{:02x}", checksum(data.as_bytes())).into_bytes()
}

/// Takes the first whole packet off the front of `buf`: `Ok(None)` when
/// none is complete yet; bytes before a `$` (acks, noise) are dropped.
pub fn take_packet(buf: &mut Vec<u8>) -> Result<Option<String>, VmError> {
    let Some(start) = buf.iter().position(|&b| b == b'$') else {
        buf.clear();
        return Ok(None);
    };
    buf.drain(..start);
    let Some(hash) = buf.iter().position(|&b| b == b'#') else {
        if buf.len() > MAX_PACKET {
            return Err(err(format!("a packet longer than {MAX_PACKET} bytes")));
        }
        return Ok(None);
    };
    if buf.len() < hash + 3 {
        return Ok(None);
    }
    let data = buf[1..hash].to_vec();
    let sum = std::str::from_utf8(&buf[hash + 1..hash + 3])
        .ok()
        .and_then(|s| u8::from_str_radix(s, 16).ok());
    buf.drain(..hash + 3);
    if sum != Some(checksum(&data)) {
        return Err(err("a packet with a bad checksum"));
    }
    String::from_utf8(data)
        .map(Some)
        .map_err(|_| err("a packet that is not text"))
}

/// The address a stop reply says a write watchpoint fired at.
pub fn watch_hit(reply: &str) -> Option<u64> {
    if !reply.starts_with('T') {
        return None;
    }
    reply.split(';').find_map(|field| {
        let hex = field
            .strip_prefix("watch:")
            .or_else(|| field.get(3..).and_then(|f| f.strip_prefix("watch:")))?;
        u64::from_str_radix(hex, 16).ok()
    })
}

impl Gdb {
    /// Connects (QEMU stops the VM on connect) and turns acks off; the VM
    /// is left stopped.
    pub fn connect(socket: &Path) -> Result<Self, VmError> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| err(format!("connecting to {}: {e}", socket.display())))?;
        let mut g = Self {
            stream,
            buf: Vec::new(),
            running: false,
            acks: true,
        };
        // The VM stopped when we connected: whatever goes wrong now, it
        // must run on.
        match g.command("QStartNoAckMode") {
            Ok(reply) => {
                g.acks = reply != "OK";
                Ok(g)
            }
            Err(e) => {
                let _ = g.resume();
                Err(e)
            }
        }
    }

    /// Writes `bytes` whole (blocking: reads may have left the socket
    /// non-blocking).
    fn write(&mut self, bytes: &[u8], what: &str) -> Result<(), VmError> {
        self.stream
            .set_nonblocking(false)
            .and_then(|()| self.stream.write_all(bytes))
            .map_err(|e| err(format!("{what}: {e}")))
    }

    fn send(&mut self, data: &str) -> Result<(), VmError> {
        self.write(&frame(data), &format!("sending {data:?}"))
    }

    /// The next packet within `wait`; `None` when none came.
    fn read_packet(&mut self, wait: Duration) -> Result<Option<String>, VmError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(p) = take_packet(&mut self.buf)? {
                if self.acks {
                    self.write(b"+", "acknowledging")?;
                }
                return Ok(Some(p));
            }
            // A zero wait still reads what is there, without blocking.
            let left = deadline.saturating_duration_since(Instant::now());
            self.stream
                .set_nonblocking(left.is_zero())
                .map_err(|e| err(format!("setting the socket's blocking mode: {e}")))?;
            if !left.is_zero() {
                self.stream
                    .set_read_timeout(Some(left))
                    .map_err(|e| err(format!("setting a read timeout: {e}")))?;
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(err("QEMU closed the connection")),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(err(format!("reading: {e}"))),
            }
        }
    }

    /// Sends `data` and returns the first reply that is not a stop reply
    /// (stop replies of our own freezes can arrive in between).
    fn command(&mut self, data: &str) -> Result<String, VmError> {
        self.send(data)?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_packet(left)? {
                Some(p) if p.starts_with('T') || p.starts_with('S') => continue,
                Some(p) => return Ok(p),
                None => return Err(err(format!("no reply to {data:?} within {REPLY_WAIT:?}"))),
            }
        }
    }

    /// Stops a running guest through the stub and waits for its stop
    /// reply.
    fn interrupt(&mut self) -> Result<(), VmError> {
        self.write(&[0x03], "interrupting")?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_packet(left)? {
                Some(p) if p.starts_with('T') || p.starts_with('S') => break,
                Some(_) => continue,
                None => return Err(err("the guest did not stop on an interrupt")),
            }
        }
        self.running = false;
        Ok(())
    }

    /// Adds a write watchpoint of `len` bytes at kernel address `va` and
    /// lets the guest run.
    pub fn watch(&mut self, va: u64, len: u32) -> Result<(), VmError> {
        if self.running {
            self.interrupt()?;
        }
        let inserted = self.command(&format!("Z2,{va:x},{len:x}"));
        // Whatever the answer, the guest runs on.
        self.resume()?;
        match inserted? {
            r if r == "OK" => Ok(()),
            r => Err(err(format!(
                "QEMU refused a {len}-byte write watchpoint at {va:#x}: {r:?}"
            ))),
        }
    }

    /// Removes the write watchpoint of `len` bytes at `va`.
    pub fn unwatch(&mut self, va: u64, len: u32) -> Result<(), VmError> {
        if self.running {
            self.interrupt()?;
        }
        let removed = self.command(&format!("z2,{va:x},{len:x}"));
        self.resume()?;
        removed.map(drop)
    }

    /// Lets the guest run on.
    pub fn resume(&mut self) -> Result<(), VmError> {
        self.send("c")?;
        self.running = true;
        Ok(())
    }

    /// A watchpoint that fired since the last call (the guest is stopped
    /// then, until [`Self::resume`]); other stop replies are dropped.
    pub fn poll_hit(&mut self) -> Result<Option<u64>, VmError> {
        while let Some(p) = self.read_packet(Duration::ZERO)? {
            if let Some(va) = watch_hit(&p) {
                self.running = false;
                return Ok(Some(va));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// Reads one packet the client sent (acks and interrupts are returned
    /// as themselves).
    fn next(stream: &mut UnixStream, buf: &mut Vec<u8>) -> String {
        loop {
            if let Some(&b) = buf.first()
                && (b == b'+' || b == 0x03)
            {
                buf.remove(0);
                return (b as char).to_string();
            }
            if let Some(p) = take_packet(buf).unwrap() {
                return p;
            }
            let mut chunk = [0u8; 256];
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the client hung up");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A stub that behaves like QEMU 7.2's: no QStartNoAckMode, acks
    /// expected, a stop reply for an interrupt, a watch stop reply.
    #[test]
    fn a_session_with_a_stub_like_qemus() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gdb.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let stub = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut seen = Vec::new();
            let say = |s: &mut UnixStream, p: &str| s.write_all(&frame(p)).unwrap();
            // QEMU reports its stop on connect, then answers the request.
            assert_eq!(next(&mut s, &mut buf), "QStartNoAckMode");
            say(&mut s, "T02thread:01;");
            say(&mut s, "");
            for want in ["+", "+"] {
                assert_eq!(next(&mut s, &mut buf), want, "acks for both");
            }
            loop {
                let p = next(&mut s, &mut buf);
                seen.push(p.clone());
                match p.as_str() {
                    p if p.starts_with("Z2,") || p.starts_with("z2,") => say(&mut s, "OK"),
                    "\u{3}" => say(&mut s, "T02thread:01;"),
                    "c" if seen.iter().filter(|p| *p == "c").count() == 2 => {
                        say(&mut s, "T05watch:ffffffff82001000;thread:p01.01;");
                    }
                    "c" if seen.iter().filter(|p| *p == "c").count() == 3 => break,
                    _ => {}
                }
            }
            seen.retain(|p| p != "+");
            seen
        });
        let mut g = Gdb::connect(&path).unwrap();
        assert!(g.acks, "no QStartNoAckMode: acks stay on");
        g.watch(0xffff_ffff_8200_1000, 4).unwrap();
        // The second watch interrupts the running guest first.
        g.watch(0xffff_ffff_8200_2000, 4).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let hit = loop {
            if let Some(va) = g.poll_hit().unwrap() {
                break va;
            }
            assert!(Instant::now() < deadline, "no hit");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(hit, 0xffff_ffff_8200_1000);
        g.resume().unwrap();
        let seen = stub.join().unwrap();
        assert_eq!(
            seen,
            [
                "Z2,ffffffff82001000,4",
                "c",
                "\u{3}",
                "Z2,ffffffff82002000,4",
                "c",
                "c"
            ]
        );
    }

    #[test]
    fn packets_frame_and_parse() {
        assert_eq!(frame("c"), b"$c#63");
        let mut buf = b"+$OK#9a$T05watch:ffffffff8290f1a0;thread:p01.01;#".to_vec();
        assert_eq!(take_packet(&mut buf).unwrap().as_deref(), Some("OK"));
        assert_eq!(take_packet(&mut buf).unwrap(), None, "incomplete");
        let sum = checksum(b"T05watch:ffffffff8290f1a0;thread:p01.01;");
        buf.extend_from_slice(format!("{sum:02x}").as_bytes());
        let p = take_packet(&mut buf).unwrap().unwrap();
        assert_eq!(watch_hit(&p), Some(0xffff_ffff_8290_f1a0));
        assert_eq!(watch_hit("T02thread:01;"), None);
        assert_eq!(watch_hit("OK"), None);
        let mut bad = b"$OK#00".to_vec();
        assert!(take_packet(&mut bad).is_err());
        let mut noise = b"+++".to_vec();
        assert_eq!(take_packet(&mut noise).unwrap(), None);
        assert!(noise.is_empty());
    }
}
