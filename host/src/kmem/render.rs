//! Values rendered through BTF: bytes taken from the guest (a BPF map's
//! value, a kernel struct) turned into JSON by their type: integers,
//! enums by name, char arrays as text, structs and datasecs member by
//! member, pointers as hex.
//!
//! Both the bytes and the BTF come from the guest, so everything is
//! bounded: nesting depth, elements shown per array, nodes per value, and
//! reads past the bytes given become a `"<short>"` marker, never a panic.

use btf_rs::Type;
use serde_json::{Map, Value, json};

use super::btf::Types;
use super::error::KmemError;

/// Deepest nesting rendered; deeper is `"<too deep>"`.
const MAX_DEPTH: u32 = 12;
/// Most array elements shown; the rest are counted.
const MAX_ELEMS: usize = 64;
/// Most JSON nodes in one rendered value.
const MAX_NODES: usize = 4096;

impl Types {
    /// The type with BTF id `id`.
    pub fn by_id(&self, id: u32) -> Result<Type, KmemError> {
        self.btf
            .resolve_type_by_id(id)
            .map_err(|e| KmemError::Btf(format!("type id {id}: {e}")))
    }

    /// `bytes` rendered as type `ty`.
    pub fn render(&self, ty: &Type, bytes: &[u8]) -> Value {
        let mut r = Renderer {
            types: self,
            nodes: 0,
        };
        r.value(ty, bytes, 0)
    }
}

struct Renderer<'t> {
    types: &'t Types,
    nodes: usize,
}

/// The `size` bytes at `at` in `bytes`, if they are all there.
fn slice(bytes: &[u8], at: usize, size: usize) -> Option<&[u8]> {
    bytes.get(at..at.checked_add(size)?)
}

fn uint_le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(w)
}

/// Sign-extends the low `bits` of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    if bits == 0 || bits >= 64 {
        return v as i64;
    }
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// Text up to the first NUL, or `None` when it is not printable UTF-8.
fn text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = std::str::from_utf8(&b[..end]).ok()?;
    s.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\t')
        .then(|| s.to_string())
}

impl Renderer<'_> {
    fn value(&mut self, ty: &Type, bytes: &[u8], depth: u32) -> Value {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return json!("<too many nodes>");
        }
        if depth > MAX_DEPTH {
            return json!("<too deep>");
        }
        let ty = match self.types.peel(ty.clone()) {
            Ok(t) => t,
            Err(e) => return json!(format!("<{e}>")),
        };
        match &ty {
            Type::Int(i) => match slice(bytes, 0, i.size()) {
                Some(b) if i.size() <= 8 => {
                    let v = uint_le(b);
                    if i.is_bool() {
                        json!(v != 0)
                    } else if i.is_signed() {
                        json!(signed(v, 8 * i.size() as u32))
                    } else {
                        json!(v)
                    }
                }
                Some(b) => json!(hex(b)),
                None => json!("<short>"),
            },
            Type::Ptr(_) => match slice(bytes, 0, 8) {
                Some(b) => json!(format!("{:#x}", uint_le(b))),
                None => json!("<short>"),
            },
            Type::Enum(e) => match slice(bytes, 0, e.size().min(8)) {
                Some(b) => {
                    let v = uint_le(b);
                    e.members
                        .iter()
                        .find(|m| u64::from(m.val()) == v)
                        .and_then(|m| self.types.btf.resolve_name(m).ok())
                        .map_or_else(|| json!(v), |n| json!(n))
                }
                None => json!("<short>"),
            },
            Type::Enum64(e) => match slice(bytes, 0, e.size().min(8)) {
                Some(b) => {
                    let v = uint_le(b);
                    e.members
                        .iter()
                        .find(|m| m.val() == v)
                        .and_then(|m| self.types.btf.resolve_name(m).ok())
                        .map_or_else(|| json!(v), |n| json!(n))
                }
                None => json!("<short>"),
            },
            Type::Float(f) => match (f.size(), slice(bytes, 0, f.size())) {
                (4, Some(b)) => json!(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                (8, Some(b)) => json!(f64::from_bits(uint_le(b))),
                (_, Some(b)) => json!(hex(b)),
                (_, None) => json!("<short>"),
            },
            Type::Array(a) => self.array(a, bytes, depth),
            Type::Struct(s) | Type::Union(s) => {
                let mut out = Map::new();
                self.members(s, bytes, depth, &mut out);
                Value::Object(out)
            }
            Type::Datasec(d) => {
                let mut out = Map::new();
                for v in &d.variables {
                    let (name, vty) = match self.types.btf.resolve_chained_type(v) {
                        Ok(Type::Var(var)) => (
                            self.types.btf.resolve_name(&var).unwrap_or_default(),
                            self.types.btf.resolve_chained_type(&var),
                        ),
                        _ => continue,
                    };
                    let value = match (vty, slice(bytes, v.offset() as usize, v.size())) {
                        (Ok(t), Some(b)) => self.value(&t, b, depth + 1),
                        (Err(e), _) => json!(format!("<{e}>")),
                        (_, None) => json!("<short>"),
                    };
                    out.insert(name, value);
                }
                Value::Object(out)
            }
            other => json!(format!("<{}>", other.name())),
        }
    }

    fn array(&mut self, a: &btf_rs::Array, bytes: &[u8], depth: u32) -> Value {
        let elem = match self.types.btf.resolve_chained_type(a) {
            Ok(t) => t,
            Err(e) => return json!(format!("<{e}>")),
        };
        let peeled = self.types.peel(elem.clone()).ok();
        if let Some(Type::Int(i)) = &peeled
            && i.size() == 1
        {
            let b = slice(bytes, 0, a.len()).unwrap_or(bytes);
            if let Some(s) = text(b) {
                return json!(s);
            }
            return json!(hex(b));
        }
        let size = match self.types.size(&elem) {
            Ok(0) | Err(_) => return json!("<unsized elements>"),
            Ok(n) => n,
        };
        let shown = a.len().min(MAX_ELEMS);
        let mut out = Vec::with_capacity(shown + 1);
        for i in 0..shown {
            match slice(bytes, i * size, size) {
                Some(b) => out.push(self.value(&elem, b, depth + 1)),
                None => {
                    out.push(json!("<short>"));
                    break;
                }
            }
        }
        if a.len() > shown {
            out.push(json!(format!("<{} more>", a.len() - shown)));
        }
        Value::Array(out)
    }

    /// The members of `s` into `out`; an anonymous member's own members
    /// are put beside the named ones, as C reads them.
    fn members(
        &mut self,
        s: &btf_rs::Struct,
        bytes: &[u8],
        depth: u32,
        out: &mut Map<String, Value>,
    ) {
        for m in &s.members {
            let name = self.types.btf.resolve_name(m).unwrap_or_default();
            let mty = match self.types.btf.resolve_chained_type(m) {
                Ok(t) => t,
                Err(e) => {
                    out.insert(name, json!(format!("<{e}>")));
                    continue;
                }
            };
            let bit = m.bit_offset() as usize;
            let at = bit / 8;
            if let Some(bits) = m.bitfield_size().filter(|&b| b != 0) {
                let v = slice(bytes, at, 8.min(bytes.len().saturating_sub(at)))
                    .map(uint_le)
                    .map(|w| (w >> (bit % 8)) & (u64::MAX >> (64 - bits.min(64))));
                out.insert(name, v.map_or_else(|| json!("<short>"), |v| json!(v)));
                continue;
            }
            let size = self.types.size(&mty).unwrap_or(0);
            if name.is_empty() {
                // What there is of it: its members mark themselves short.
                let b = bytes.get(at..).unwrap_or(&[]);
                let b = &b[..size.min(b.len())];
                if let Ok(Type::Struct(inner) | Type::Union(inner)) = self.types.peel(mty.clone())
                    && depth < MAX_DEPTH
                {
                    self.members(&inner, b, depth + 1, out);
                }
                continue;
            }
            let Some(b) = slice(bytes, at, size) else {
                out.insert(name, json!("<short>"));
                continue;
            };
            let v = self.value(&mty, b, depth + 1);
            out.insert(name, v);
        }
    }
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmem::btf::tests::tiny_btf;

    #[test]
    fn a_struct_with_an_anonymous_union_renders_member_by_member() {
        let t = Types::parse(&tiny_btf()).unwrap();
        let rq = t.var_type("runqueues").unwrap();
        let mut bytes = Vec::new();
        bytes.extend(7i32.to_le_bytes());
        bytes.extend((-3i32).to_le_bytes());
        let v = t.render(&rq, &bytes);
        assert_eq!(v, json!({"nr_running": 7, "clock": -3, "other": -3}));
        // Short bytes are marked, not read past.
        let v = t.render(&rq, &bytes[..5]);
        assert_eq!(
            v,
            json!({"nr_running": 7, "clock": "<short>", "other": "<short>"})
        );
        assert_eq!(
            t.render(&rq, &[]),
            json!({"nr_running": "<short>", "clock": "<short>", "other": "<short>"})
        );
    }

    #[test]
    fn helpers_sign_extend_and_stop_text_at_nul() {
        assert_eq!(signed(0xff, 8), -1);
        assert_eq!(signed(0x7f, 8), 127);
        assert_eq!(text(b"ab\0cd"), Some("ab".into()));
        assert_eq!(text(b"\x01\x02"), None);
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
