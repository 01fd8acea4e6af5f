//! Struct layouts from the guest kernel's own BTF (parsed with btf-rs):
//! where a member sits inside a type, what type a global or per-CPU
//! variable has, and how big things are. No offset is hard-coded for one
//! kernel build.
//!
//! The BTF comes out of guest memory, so its header is checked before the
//! parser sees it (the parser adds header fields without overflow checks),
//! and a parser panic on a hostile blob becomes an error.

use btf_rs::{Btf, Type};

use super::error::KmemError;

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

/// A parsed kernel BTF.
pub struct Types {
    pub(super) btf: Btf,
}

/// Where a member is: byte offset from the start of its outer type, its
/// size in bytes, and its type.
#[derive(Clone, Debug)]
pub struct Field {
    pub offset: u64,
    pub size: usize,
    pub ty: Type,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks the header's sections lie inside `bytes` (little-endian only:
/// the guest is x86-64).
fn check_header(bytes: &[u8]) -> Result<(), KmemError> {
    let bad = |why: String| Err(KmemError::Btf(why));
    if bytes.len() < HEADER_LEN {
        return bad(format!("{} bytes, shorter than a header", bytes.len()));
    }
    if u16::from_le_bytes([bytes[0], bytes[1]]) != MAGIC {
        return bad("no BTF magic (0xeb9f)".into());
    }
    if bytes[2] != 1 {
        return bad(format!("version {}, not 1", bytes[2]));
    }
    let hdr_len = u32_at(bytes, 4) as u64;
    let sections = [
        ("type", u32_at(bytes, 8) as u64, u32_at(bytes, 12) as u64),
        ("string", u32_at(bytes, 16) as u64, u32_at(bytes, 20) as u64),
    ];
    if hdr_len < HEADER_LEN as u64 || hdr_len > bytes.len() as u64 {
        return bad(format!("header length {hdr_len} does not fit"));
    }
    for (what, off, len) in sections {
        // u32 + u32 + u32 cannot overflow u64.
        if hdr_len + off + len > bytes.len() as u64 {
            return bad(format!(
                "the {what} section ({off}+{len} after a {hdr_len}-byte header) runs past the \
                 {} bytes given",
                bytes.len()
            ));
        }
    }
    Ok(())
}

impl Types {
    /// Parses BTF bytes taken from the guest.
    pub fn parse(bytes: &[u8]) -> Result<Self, KmemError> {
        check_header(bytes)?;
        match std::panic::catch_unwind(|| Btf::from_bytes(bytes)) {
            Ok(Ok(btf)) => Ok(Self { btf }),
            Ok(Err(e)) => Err(KmemError::Btf(format!("{e:#}"))),
            Err(_) => Err(KmemError::Btf(
                "the parser gave up on a malformed blob".into(),
            )),
        }
    }

    fn err(e: impl std::fmt::Display) -> KmemError {
        KmemError::Btf(e.to_string())
    }

    /// `ty` with typedefs and qualifiers peeled off.
    pub(super) fn peel(&self, mut ty: Type) -> Result<Type, KmemError> {
        for _ in 0..32 {
            ty = match ty {
                Type::Typedef(t) | Type::TypeTag(t) => {
                    self.btf.resolve_chained_type(&t).map_err(Self::err)?
                }
                Type::Volatile(t) | Type::Const(t) | Type::Restrict(t) => {
                    self.btf.resolve_chained_type(&t).map_err(Self::err)?
                }
                other => return Ok(other),
            };
        }
        Err(KmemError::Btf("typedef chain longer than 32".into()))
    }

    /// The type of global (or per-CPU) variable `name`.
    pub fn var_type(&self, name: &str) -> Result<Type, KmemError> {
        let found = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| KmemError::NoType(name.to_string()))?;
        let var = found
            .into_iter()
            .find_map(|t| match t {
                Type::Var(v) => Some(v),
                _ => None,
            })
            .ok_or_else(|| KmemError::NoType(format!("variable {name}")))?;
        let ty = self.btf.resolve_chained_type(&var).map_err(Self::err)?;
        self.peel(ty)
    }

    /// The struct or union called `name`.
    pub fn named(&self, name: &str) -> Result<Type, KmemError> {
        let found = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| KmemError::NoType(name.to_string()))?;
        found
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_) | Type::Union(_)))
            .ok_or_else(|| KmemError::NoType(name.to_string()))
    }

    /// Size in bytes of `ty`.
    pub fn size(&self, ty: &Type) -> Result<usize, KmemError> {
        self.size_within(ty, 0)
    }

    /// [`Self::size`], refusing arrays nested past 32 deep (a hostile BTF
    /// can make an array of itself).
    fn size_within(&self, ty: &Type, depth: u32) -> Result<usize, KmemError> {
        if depth > 32 {
            return Err(KmemError::Btf("arrays nested past 32 deep".into()));
        }
        match self.peel(ty.clone())? {
            Type::Int(i) => Ok(i.size()),
            Type::Ptr(_) => Ok(8),
            Type::Struct(s) | Type::Union(s) => Ok(s.size()),
            Type::Enum(e) => Ok(e.size()),
            Type::Enum64(e) => Ok(e.size()),
            Type::Float(f) => Ok(f.size()),
            Type::Array(a) => {
                let elem = self.btf.resolve_chained_type(&a).map_err(Self::err)?;
                Ok(self.size_within(&elem, depth + 1)?.saturating_mul(a.len()))
            }
            other => Err(KmemError::Btf(format!("{} has no size", other.name()))),
        }
    }

    fn type_name(&self, ty: &Type) -> String {
        ty.as_btf_type()
            .and_then(|t| self.btf.resolve_name(t).ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("<anonymous {}>", ty.name()))
    }

    /// The named, byte-aligned members of struct or union `ty` (directly in
    /// it), with their offsets and sizes: for rendering a whole struct
    /// (event counters, say) field by field.
    pub fn members(&self, ty: &Type) -> Result<Vec<(String, Field)>, KmemError> {
        let (Type::Struct(s) | Type::Union(s)) = self.peel(ty.clone())? else {
            return Err(KmemError::Btf(format!(
                "{} is not a struct or union",
                self.type_name(ty)
            )));
        };
        let mut out = Vec::new();
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if name.is_empty()
                || m.bit_offset() % 8 != 0
                || m.bitfield_size().is_some_and(|b| b != 0)
            {
                continue;
            }
            let mty = self.btf.resolve_chained_type(m).map_err(Self::err)?;
            let size = self.size(&mty)?;
            out.push((
                name,
                Field {
                    offset: u64::from(m.bit_offset() / 8),
                    size,
                    ty: mty,
                },
            ));
        }
        Ok(out)
    }

    /// `member` directly in `ty`, or inside one of its anonymous members.
    fn find(&self, ty: &Type, member: &str, depth: u32) -> Result<Option<Field>, KmemError> {
        let (Type::Struct(s) | Type::Union(s)) = self.peel(ty.clone())? else {
            return Ok(None);
        };
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let mty = self.btf.resolve_chained_type(m).map_err(Self::err)?;
            let offset = u64::from(m.bit_offset() / 8);
            if name == member {
                if m.bitfield_size().is_some_and(|b| b != 0) || m.bit_offset() % 8 != 0 {
                    return Err(KmemError::Btf(format!(
                        "{member} is a bitfield; read the bytes around it instead"
                    )));
                }
                let size = self.size(&mty)?;
                return Ok(Some(Field {
                    offset,
                    size,
                    ty: mty,
                }));
            }
            if name.is_empty()
                && let Some(f) = self.find(&mty, member, depth + 1)?
            {
                return Ok(Some(Field {
                    offset: offset + f.offset,
                    ..f
                }));
            }
        }
        Ok(None)
    }

    /// The name of `value` in enum `enum_name` (`scx_exit_kind`), if the
    /// BTF has that enum and value.
    pub fn enum_name(&self, enum_name: &str, value: u64) -> Option<String> {
        let found = self.btf.resolve_types_by_name(enum_name).ok()?;
        found.into_iter().find_map(|t| match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| u64::from(m.val()) == value)
                .and_then(|m| self.btf.resolve_name(m).ok()),
            Type::Enum64(e) => e
                .members
                .iter()
                .find(|m| m.val() == value)
                .and_then(|m| self.btf.resolve_name(m).ok()),
            _ => None,
        })
    }

    /// The member at dotted `path` (`"a.b"`) inside `ty`; an empty path is
    /// `ty` itself.
    pub fn field(&self, ty: &Type, path: &str) -> Result<Field, KmemError> {
        let mut at = Field {
            offset: 0,
            size: self.size(ty)?,
            ty: ty.clone(),
        };
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let f = self
                .find(&at.ty, part, 0)?
                .ok_or_else(|| KmemError::NoMember {
                    ty: self.type_name(&at.ty),
                    member: part.to_string(),
                    path: path.to_string(),
                })?;
            at = Field {
                offset: at.offset + f.offset,
                ..f
            };
        }
        Ok(at)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny BTF: `int`, `struct rq { int nr_running; union { int clock;
    /// int other; }; }` (8 bytes), `typedef struct rq rq_t`, and the
    /// variable `runqueues` of type `rq_t`.
    pub(crate) fn tiny_btf() -> Vec<u8> {
        let strings = b"\0int\0rq\0nr_running\0clock\0other\0runqueues\0rq_t\0";
        let off = |s: &str| -> u32 {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t: Vec<u32> = Vec::new();
        // 1: int
        t.extend([off("int"), 1 << 24, 4, (1 << 24) | 32]);
        // 2: union { int clock; int other; } (anonymous)
        t.extend([0, (5 << 24) | 2, 4]);
        t.extend([off("clock"), 1, 0, off("other"), 1, 0]);
        // 3: struct rq
        t.extend([off("rq"), (4 << 24) | 2, 8]);
        t.extend([off("nr_running"), 1, 0, 0, 2, 32]);
        // 4: typedef rq_t -> 3
        t.extend([off("rq_t"), 8 << 24, 3]);
        // 5: var runqueues : 4
        t.extend([off("runqueues"), 14 << 24, 4, 1]);
        let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut b = Vec::new();
        b.extend(MAGIC.to_le_bytes());
        b.extend([1u8, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend(w.to_le_bytes());
        }
        b.extend(types);
        b.extend(strings);
        b
    }

    #[test]
    fn members_by_path_through_typedefs_and_anonymous_unions() {
        let t = Types::parse(&tiny_btf()).unwrap();
        let rq = t.var_type("runqueues").unwrap();
        assert_eq!(t.size(&rq).unwrap(), 8);
        let f = t.field(&rq, "nr_running").unwrap();
        assert_eq!((f.offset, f.size), (0, 4));
        let f = t.field(&rq, "clock").unwrap();
        assert_eq!((f.offset, f.size), (4, 4));
        assert_eq!(t.field(&rq, "").unwrap().size, 8);
        let e = t.field(&rq, "nope").unwrap_err().to_string();
        assert!(e.contains("rq has no member \"nope\""), "{e}");
        assert!(t.var_type("nope").is_err());
        assert!(t.named("rq").is_ok());
    }

    #[test]
    fn hostile_btf_is_a_typed_error() {
        let good = tiny_btf();
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            good[..10].to_vec(),
            good[..good.len() - 5].to_vec(),
            vec![0xff; 64],
        ];
        let mut huge = good.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(huge);
        let mut off = good.clone();
        off[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        cases.push(off);
        let mut kind = good.clone();
        kind[24 + 7] = 31; // an unknown kind in the first type
        cases.push(kind);
        for (i, c) in cases.iter().enumerate() {
            assert!(
                matches!(Types::parse(c), Err(KmemError::Btf(_))),
                "case {i}"
            );
        }
    }

    #[test]
    fn the_build_host_kernel_btf_parses_when_present() {
        let Ok(bytes) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            println!("SKIP: no /sys/kernel/btf/vmlinux on this host");
            return;
        };
        let t = Types::parse(&bytes).unwrap();
        let rq = t.var_type("runqueues").unwrap();
        let nr = t.field(&rq, "nr_running").unwrap();
        assert_eq!(nr.size, 4);
        let task = t.named("task_struct").unwrap();
        assert_eq!(t.field(&task, "pid").unwrap().size, 4);
        assert!(t.field(&task, "tasks").unwrap().size == 16);
    }
}
