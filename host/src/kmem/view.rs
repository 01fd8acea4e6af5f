//! A read-only view of a guest kernel for code that walks its structures
//! (the monitor, captures): symbols, BTF member offsets, enum names and
//! translated, bounds-checked reads. Made by [`super::Kernel::view`]; it
//! writes nothing and keeps nothing between uses.

use super::btf::Types;
use super::error::KmemError;
use super::symbols::Symbols;
use super::translate::AddressSpace;

/// Most bytes one read may ask for.
pub const MAX_READ: usize = 1 << 20;

/// See [`super::Kernel::view`]. Every read is bounds-checked guest memory; values
/// read are the guest's and may be anything.
pub struct View<'k> {
    syms: &'k Symbols,
    types: &'k Types,
    space: AddressSpace<'k>,
}

/// Where a member sits: its byte offset and size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldAt {
    pub offset: u64,
    pub size: usize,
}

impl<'k> View<'k> {
    pub(super) fn new(syms: &'k Symbols, types: &'k Types, space: AddressSpace<'k>) -> Self {
        Self { syms, types, space }
    }

    /// The address of symbol `name`.
    pub fn sym(&self, name: &str) -> Result<u64, KmemError> {
        self.syms.addr(name)
    }

    pub fn read_u64(&self, va: u64) -> Result<u64, KmemError> {
        self.space.read_u64(va)
    }

    /// Where `va` is in guest-physical memory.
    pub fn to_phys(&self, va: u64) -> Result<u64, KmemError> {
        self.space.to_phys(va)
    }

    pub fn read_u32(&self, va: u64) -> Result<u32, KmemError> {
        self.space.read_u32(va)
    }

    /// `n` bytes at `va` (at most [`MAX_READ`]).
    pub fn read_bytes(&self, va: u64, n: usize) -> Result<Vec<u8>, KmemError> {
        if n > MAX_READ {
            return Err(KmemError::Invalid(format!(
                "a read of {n} bytes; reads are at most {MAX_READ}"
            )));
        }
        let mut buf = vec![0u8; n];
        self.space.read(va, &mut buf)?;
        Ok(buf)
    }

    /// An unsigned field of `size` 1, 2, 4 or 8 bytes at `va`.
    pub fn read_uint(&self, va: u64, size: usize) -> Result<u64, KmemError> {
        let b = self.read_bytes(va, size)?;
        match size {
            1 | 2 | 4 | 8 => {
                let mut w = [0u8; 8];
                w[..size].copy_from_slice(&b);
                Ok(u64::from_le_bytes(w))
            }
            n => Err(KmemError::Invalid(format!(
                "a {n}-byte field read as an integer"
            ))),
        }
    }

    /// The guest's possible CPUs (`nr_cpu_ids`).
    pub fn nr_cpus(&self) -> Result<u32, KmemError> {
        self.space.read_u32(self.syms.addr("nr_cpu_ids")?)
    }

    /// CPU `cpu`'s per-CPU offset (`__per_cpu_offset[cpu]`).
    pub fn per_cpu_offset(&self, cpu: u32) -> Result<u64, KmemError> {
        let nr = self.nr_cpus()?;
        if cpu >= nr {
            return Err(KmemError::NoCpu { cpu, nr });
        }
        self.space
            .read_u64(self.syms.addr("__per_cpu_offset")? + 8 * u64::from(cpu))
    }

    /// Member `path` of struct or union `name`.
    pub fn field(&self, name: &str, path: &str) -> Result<FieldAt, KmemError> {
        let ty = self.types.named(name)?;
        let f = self.types.field(&ty, path)?;
        Ok(FieldAt {
            offset: f.offset,
            size: f.size,
        })
    }

    /// Member `path` of variable `var`'s type.
    pub fn var_field(&self, var: &str, path: &str) -> Result<FieldAt, KmemError> {
        let ty = self.types.var_type(var)?;
        let f = self.types.field(&ty, path)?;
        Ok(FieldAt {
            offset: f.offset,
            size: f.size,
        })
    }

    /// The named members of the struct at `path` in struct `name` (an
    /// empty path: `name` itself), offsets relative to that struct.
    pub fn members(&self, name: &str, path: &str) -> Result<Vec<(String, FieldAt)>, KmemError> {
        let ty = self.types.named(name)?;
        let inner = self.types.field(&ty, path)?;
        Ok(self
            .types
            .members(&inner.ty)?
            .into_iter()
            .map(|(n, f)| {
                (
                    n,
                    FieldAt {
                        offset: f.offset,
                        size: f.size,
                    },
                )
            })
            .collect())
    }

    /// The name of `value` in enum `enum_name`.
    pub fn enum_name(&self, enum_name: &str, value: u64) -> Option<String> {
        self.types.enum_name(enum_name, value)
    }
}
