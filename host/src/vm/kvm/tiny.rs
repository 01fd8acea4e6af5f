//! Tiny guest programs for testing and benchmarking the KVM backend without
//! a kernel: each runs in 64-bit mode on every vCPU with `rdi` pointing at
//! that vCPU's data block. Assembled from the source in each comment with
//! `as --64` and `objcopy -O binary`. Owns the programs and where their
//! data sits in a block; addresses come from `layout.rs`, and building the
//! machine is `machine.rs`'s.

use vm_memory::{Bytes, GuestAddress};

use super::error::KvmError;
use super::layout::{TEST_CODE_MAX_SIZE, TEST_CODE_START, TEST_DATA_START, TEST_DATA_STRIDE};
use super::machine::{Machine, MachineConfig};

/// ```text
///   lea rsi, [rip + msg]; mov dx, 0x3f8
/// 1: lodsb; test al, al; jz 2f; out dx, al; jmp 1b
/// 2: mov dx, 0x501; mov al, 0x42; out dx, al
/// 3: hlt; jmp 3b
/// msg: .asciz "hello from a ktstr tiny guest\n"
/// ```
pub const SERIAL: &[u8] = &[
    0x48, 0x8d, 0x35, 0x16, 0x00, 0x00, 0x00, 0x66, 0xba, 0xf8, 0x03, 0xac, 0x84, 0xc0, 0x74, 0x03,
    0xee, 0xeb, 0xf8, 0x66, 0xba, 0x01, 0x05, 0xb0, 0x42, 0xee, 0xf4, 0xeb, 0xfd, 0x68, 0x65, 0x6c,
    0x6c, 0x6f, 0x20, 0x66, 0x72, 0x6f, 0x6d, 0x20, 0x61, 0x20, 0x6b, 0x74, 0x73, 0x74, 0x72, 0x20,
    0x74, 0x69, 0x6e, 0x79, 0x20, 0x67, 0x75, 0x65, 0x73, 0x74, 0x0a, 0x00,
];

/// rsi = table [count u32, pad u32, (leaf u32, subleaf u32)...], rdi = out:
/// 16 bytes (eax, ebx, ecx, edx) per leaf, then [`CPUID_DONE`].
/// ```text
///   mov r9d, [rsi]; add rsi, 8; mov r8, rdi
/// 1: test r9d, r9d; jz 2f
///   mov eax, [rsi]; mov ecx, [rsi+4]; cpuid
///   mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx
///   add rsi, 8; add r8, 16; dec r9d; jmp 1b
/// 2: mov dword ptr [r8], 0xC0FFEE
/// 3: hlt; jmp 3b
/// ```
pub const CPUID: &[u8] = &[
    0x44, 0x8b, 0x0e, 0x48, 0x83, 0xc6, 0x08, 0x49, 0x89, 0xf8, 0x45, 0x85, 0xc9, 0x74, 0x23, 0x8b,
    0x06, 0x8b, 0x4e, 0x04, 0x0f, 0xa2, 0x41, 0x89, 0x00, 0x41, 0x89, 0x58, 0x04, 0x41, 0x89, 0x48,
    0x08, 0x41, 0x89, 0x50, 0x0c, 0x48, 0x83, 0xc6, 0x08, 0x49, 0x83, 0xc0, 0x10, 0x41, 0xff, 0xc9,
    0xeb, 0xd8, 0x41, 0xc7, 0x00, 0xee, 0xff, 0xc0, 0x00, 0xf4, 0xeb, 0xfd,
];

/// rdi = per-vCPU block: counter at [`COUNTER_AT`], host word at
/// [`HOST_WORD_AT`], guest copy at [`GUEST_COPY_AT`].
/// ```text
/// 1: mov rax, [rdi+8]; mov [rdi+16], rax; inc qword ptr [rdi]; jmp 1b
/// ```
pub const COUNTER: &[u8] = &[
    0x48, 0x8b, 0x47, 0x08, 0x48, 0x89, 0x47, 0x10, 0x48, 0xff, 0x07, 0xeb, 0xf3,
];

/// What [`CPUID`] writes after the last leaf once it is done.
pub const CPUID_DONE: u32 = 0x00C0_FFEE;
/// [`COUNTER`]'s data block: the counter the guest increments.
pub const COUNTER_AT: u64 = 0;
/// [`COUNTER`]'s data block: the word the host writes.
pub const HOST_WORD_AT: u64 = 8;
/// [`COUNTER`]'s data block: the guest's copy of the host word.
pub const GUEST_COPY_AT: u64 = 16;

/// The data block of vCPU `index`.
pub fn data_block(index: u32) -> u64 {
    TEST_DATA_START + TEST_DATA_STRIDE * u64::from(index)
}

/// A machine of `topo` with `memory_mib` of RAM running `code` on every vCPU
/// (`rsi` = `rsi`, `rdi` = the vCPU's data block), not yet started.
pub fn machine(topo: &str, memory_mib: u64, code: &[u8], rsi: u64) -> Result<Machine, KvmError> {
    if code.len() as u64 > TEST_CODE_MAX_SIZE {
        return Err(KvmError::ProgramTooLarge {
            len: code.len(),
            max: TEST_CODE_MAX_SIZE,
        });
    }
    let topology = topo.parse()?;
    let m = Machine::new(&MachineConfig {
        topology,
        memory_mib,
        shm_size: 1 << 20,
    })?;
    m.memory()
        .write_slice(code, GuestAddress(TEST_CODE_START))
        .map_err(|source| KvmError::GuestMemory {
            what: "the test program",
            source,
        })?;
    m.setup_long_mode(TEST_CODE_START, rsi, data_block)?;
    Ok(m)
}
