//! The guest's BPF maps in a capture: every map on the kernel's `map_idr`
//! (id, name, type, sizes) and the values of array and hash maps, rendered
//! through the map's own BTF when it has one (a scheduler's `.bss` shows
//! its variables by name), else as hex.
//!
//! `map_idr` is an xarray; [`xa_entries`] walks it with bounds on depth,
//! nodes and entries and a check that each node sits where its parent
//! says, so a damaged or hostile tree ends in a typed error, not a loop.
//! Everything here reads a frozen guest through [`View`]; it writes
//! nothing and owns no VM.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::kmem::KmemError;
use crate::kmem::btf::Types;
use crate::kmem::render::hex;
use crate::kmem::view::MAX_READ;
use crate::kmem::view::{FieldAt, View};

use super::kernel_lists::{nulls_chain, xa_entries};

/// Most maps listed in one capture.
pub const MAX_MAPS: usize = 64;
/// Most entries shown per map.
pub const MAX_ENTRIES: usize = 64;
/// Most bytes of one value read.
const MAX_VALUE: usize = 64 << 10;
/// Most hash buckets looked at per map.
const MAX_BUCKETS: u64 = 1 << 16;
/// Most key and value bytes one capture reads over all its maps: a guest
/// with many big maps costs a capture this much, not gigabytes.
pub const CAPTURE_BYTES: usize = 1 << 20;
/// Most parsed map BTFs kept; past it the cache starts over.
const MAX_CACHED_BTFS: usize = 16;

const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// One BPF map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BpfMap {
    pub id: u32,
    pub name: String,
    /// `hash`, `array`, `struct_ops`, ... (the number when the kernel's
    /// enum lacks it).
    #[serde(rename = "type")]
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Entries read (at most [`MAX_ENTRIES`]), keys and values rendered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<MapEntry>,
    /// Why the values are not (all) shown, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    pub key: Value,
    pub value: Value,
}

/// Where `struct bpf_map` and friends keep what is read, from the
/// kernel's BTF.
#[derive(Clone, Debug)]
pub struct MapsLayout {
    map_idr: u64,
    xa_head: FieldAt,
    node_shift: FieldAt,
    node_slots: FieldAt,
    id: FieldAt,
    name: FieldAt,
    map_type: FieldAt,
    key_size: FieldAt,
    value_size: FieldAt,
    max_entries: FieldAt,
    btf: Option<FieldAt>,
    btf_key_type_id: Option<FieldAt>,
    btf_value_type_id: Option<FieldAt>,
    /// `struct btf`'s raw blob and its length.
    btf_blob: Option<(FieldAt, FieldAt)>,
    /// `struct btf`'s id: with its address, the cache key.
    btf_id: Option<FieldAt>,
    /// `struct bpf_array`'s flexible `value` and `elem_size`.
    array: Option<(FieldAt, FieldAt)>,
    hash: Option<HashLayout>,
}

/// `struct bpf_htab`: its buckets, and where an element keeps its key.
#[derive(Clone, Debug)]
struct HashLayout {
    buckets: FieldAt,
    n_buckets: FieldAt,
    bucket_size: usize,
    first: FieldAt,
    node_next: FieldAt,
    elem_node: FieldAt,
    elem_key: FieldAt,
}

impl MapsLayout {
    /// Finds everything; the map list itself (`map_idr`, the xarray and
    /// `struct bpf_map`'s basics) is required, values are optional.
    pub fn resolve(view: &View<'_>) -> Result<Self, KmemError> {
        let map = |p: &str| view.field("bpf_map", p);
        let hash = || -> Result<HashLayout, KmemError> {
            Ok(HashLayout {
                buckets: view.field("bpf_htab", "buckets")?,
                n_buckets: view.field("bpf_htab", "n_buckets")?,
                bucket_size: view.field("bucket", "")?.size,
                first: view.field("bucket", "head.first")?,
                node_next: view.field("hlist_nulls_node", "next")?,
                elem_node: view.field("htab_elem", "hash_node")?,
                elem_key: view.field("htab_elem", "key")?,
            })
        };
        Ok(Self {
            map_idr: view.sym("map_idr")?,
            xa_head: view.field("idr", "idr_rt.xa_head")?,
            node_shift: view.field("xa_node", "shift")?,
            node_slots: view.field("xa_node", "slots")?,
            id: map("id")?,
            name: map("name")?,
            map_type: map("map_type")?,
            key_size: map("key_size")?,
            value_size: map("value_size")?,
            max_entries: map("max_entries")?,
            btf: map("btf").ok(),
            btf_key_type_id: map("btf_key_type_id").ok(),
            btf_value_type_id: map("btf_value_type_id").ok(),
            btf_blob: view
                .field("btf", "data")
                .ok()
                .zip(view.field("btf", "data_size").ok()),
            btf_id: view.field("btf", "id").ok(),
            array: view
                .field("bpf_array", "value")
                .ok()
                .zip(view.field("bpf_array", "elem_size").ok()),
            hash: hash().ok(),
        })
    }
}

/// Parsed map BTFs, kept across captures by (address, BTF id).
#[derive(Default)]
pub struct BtfCache {
    parsed: HashMap<(u64, u32), Result<Arc<Types>, String>>,
}

/// Every map on `map_idr` (at most [`MAX_MAPS`]) with its entries.
pub fn read_maps(
    view: &View<'_>,
    layout: &MapsLayout,
    cache: &mut BtfCache,
) -> Result<Vec<BpfMap>, KmemError> {
    let head = view.read_u64(layout.map_idr + layout.xa_head.offset)?;
    let shift_at = layout.node_shift.offset;
    let maps = xa_entries(
        head,
        layout.node_slots,
        &|va| view.read_u64(va),
        &|va| Ok(view.read_bytes(va + shift_at, 1)?[0]),
        MAX_MAPS,
    )?;
    let mut budget = CAPTURE_BYTES;
    Ok(maps
        .into_iter()
        .map(|(_, map)| read_map(view, layout, cache, map, &mut budget))
        .collect())
}

/// Takes `n` bytes from `budget`, or says it is spent.
fn spend(budget: &mut usize, n: usize) -> Result<(), String> {
    if n > *budget {
        return Err(format!(
            "the capture's {} KiB for map keys and values is spent",
            CAPTURE_BYTES >> 10
        ));
    }
    *budget -= n;
    Ok(())
}

fn field(view: &View<'_>, base: u64, f: FieldAt) -> Result<u64, KmemError> {
    view.read_uint(base.wrapping_add(f.offset), f.size)
}

fn read_map(
    view: &View<'_>,
    l: &MapsLayout,
    cache: &mut BtfCache,
    map: u64,
    budget: &mut usize,
) -> BpfMap {
    let u32_of = |f: FieldAt| field(view, map, f).map(|v| v as u32);
    let mut m = BpfMap {
        id: 0,
        name: String::new(),
        map_type: String::new(),
        key_size: 0,
        value_size: 0,
        max_entries: 0,
        entries: Vec::new(),
        note: None,
    };
    let basics = (|| -> Result<u32, KmemError> {
        m.id = u32_of(l.id)?;
        let name = view.read_bytes(map + l.name.offset, l.name.size)?;
        let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
        m.name = String::from_utf8_lossy(&name[..end]).into_owned();
        let ty = u32_of(l.map_type)?;
        m.map_type = view
            .enum_name("bpf_map_type", u64::from(ty))
            .map(|n| n.trim_start_matches("BPF_MAP_TYPE_").to_lowercase())
            .unwrap_or_else(|| ty.to_string());
        m.key_size = u32_of(l.key_size)?;
        m.value_size = u32_of(l.value_size)?;
        m.max_entries = u32_of(l.max_entries)?;
        Ok(ty)
    })();
    let ty = match basics {
        Ok(ty) => ty,
        Err(e) => {
            m.note = Some(format!("map at {map:#x}: {e}"));
            return m;
        }
    };
    let types = map_btf(view, l, cache, map);
    let render = |id: Option<FieldAt>, bytes: &[u8]| -> Value {
        let ty_id = id.and_then(|f| u32_of(f).ok()).filter(|&t| t != 0);
        match (&types, ty_id) {
            (Some(Ok(t)), Some(id)) => match t.by_id(id) {
                Ok(ty) => t.render(&ty, bytes),
                Err(_) => json!(hex(bytes)),
            },
            _ => json!(hex(bytes)),
        }
    };
    let read = match ty {
        BPF_MAP_TYPE_ARRAY => read_array(view, l, map, &m, budget),
        BPF_MAP_TYPE_HASH | BPF_MAP_TYPE_LRU_HASH => read_hash(view, l, map, &m, budget),
        _ => Err(format!("values of {} maps are not read", m.map_type)),
    };
    match read {
        Ok((raw, note)) => {
            m.entries = raw
                .into_iter()
                .map(|(k, v)| MapEntry {
                    key: match k {
                        Key::Index(i) => json!(i),
                        Key::Bytes(b) => render(l.btf_key_type_id, &b),
                    },
                    value: render(l.btf_value_type_id, &v),
                })
                .collect();
            m.note = note;
        }
        Err(why) => m.note = Some(why),
    }
    if let Some(Err(e)) = &types {
        let why = format!("its BTF: {e}");
        m.note = Some(m.note.take().map_or(why.clone(), |n| format!("{n}; {why}")));
    }
    m
}

enum Key {
    Index(u32),
    Bytes(Vec<u8>),
}

type Entries = (Vec<(Key, Vec<u8>)>, Option<String>);

fn value_size(m: &BpfMap) -> Result<usize, String> {
    let n = m.value_size as usize;
    if n == 0 || n > MAX_VALUE {
        return Err(format!(
            "a value size of {n} bytes (values are read up to {MAX_VALUE})"
        ));
    }
    Ok(n)
}

fn read_array(
    view: &View<'_>,
    l: &MapsLayout,
    map: u64,
    m: &BpfMap,
    budget: &mut usize,
) -> Result<Entries, String> {
    let (value, elem_size) = l.array.ok_or("this kernel's BTF has no struct bpf_array")?;
    let size = value_size(m)?;
    let stride = field(view, map, elem_size).map_err(|e| e.to_string())? as usize;
    if stride < size || stride > MAX_VALUE + 8 {
        return Err(format!("elem_size {stride} does not fit value_size {size}"));
    }
    let shown = (m.max_entries as usize).min(MAX_ENTRIES);
    let mut out = Vec::with_capacity(shown);
    for i in 0..shown {
        if let Err(spent) = spend(budget, size) {
            return Ok((out, Some(spent)));
        }
        let at = map + value.offset + (i * stride) as u64;
        let v = view
            .read_bytes(at, size)
            .map_err(|e| format!("entry {i}: {e}"))?;
        out.push((Key::Index(i as u32), v));
    }
    let note = (m.max_entries as usize > shown)
        .then(|| format!("the first {shown} of {} entries", m.max_entries));
    Ok((out, note))
}

fn read_hash(
    view: &View<'_>,
    l: &MapsLayout,
    map: u64,
    m: &BpfMap,
    budget: &mut usize,
) -> Result<Entries, String> {
    let h = l
        .hash
        .as_ref()
        .ok_or("this kernel's BTF has no struct bpf_htab")?;
    let e = |e: KmemError| e.to_string();
    let size = value_size(m)?;
    let key_size = m.key_size as usize;
    if key_size == 0 || key_size > MAX_VALUE {
        return Err(format!("a key size of {key_size} bytes"));
    }
    let buckets = field(view, map, h.buckets).map_err(e)?;
    let n = field(view, map, h.n_buckets).map_err(e)?;
    let scanned = n.min(MAX_BUCKETS);
    let mut out = Vec::new();
    let mut note = (n > scanned).then(|| format!("the first {scanned} of {n} buckets"));
    for b in 0..scanned {
        let head = buckets.wrapping_add(b * h.bucket_size as u64);
        let first = view.read_u64(head + h.first.offset).map_err(e)?;
        let room = MAX_ENTRIES - out.len();
        let nodes = nulls_chain(first, &|n| view.read_u64(n + h.node_next.offset), room)
            .map_err(|err| format!("bucket {b}: {err}"))?;
        for node in nodes {
            if let Err(spent) = spend(budget, key_size + size) {
                return Ok((out, Some(spent)));
            }
            let elem = node.wrapping_sub(h.elem_node.offset);
            let key_at = elem.wrapping_add(h.elem_key.offset);
            let k = view.read_bytes(key_at, key_size).map_err(e)?;
            let v_at = key_at.wrapping_add(key_size.next_multiple_of(8) as u64);
            let v = view.read_bytes(v_at, size).map_err(e)?;
            out.push((Key::Bytes(k), v));
        }
        if out.len() >= MAX_ENTRIES {
            note = Some(format!("the first {MAX_ENTRIES} entries found"));
            break;
        }
    }
    Ok((out, note))
}

/// The map's BTF, parsed (cached): `None` when it has none.
fn map_btf(
    view: &View<'_>,
    l: &MapsLayout,
    cache: &mut BtfCache,
    map: u64,
) -> Option<Result<Arc<Types>, String>> {
    let btf = field(view, map, l.btf?).ok().filter(|&p| p != 0)?;
    let id = l.btf_id.and_then(|f| field(view, btf, f).ok()).unwrap_or(0) as u32;
    if cache.parsed.len() >= MAX_CACHED_BTFS && !cache.parsed.contains_key(&(btf, id)) {
        cache.parsed.clear();
    }
    let parsed = cache.parsed.entry((btf, id)).or_insert_with(|| {
        let (data, len) = l.btf_blob.ok_or("no struct btf in the kernel's BTF")?;
        let ptr = field(view, btf, data).map_err(|e| e.to_string())?;
        let n = field(view, btf, len).map_err(|e| e.to_string())? as usize;
        if n == 0 || n > MAX_READ {
            return Err(format!("a BTF of {n} bytes"));
        }
        let bytes = view.read_bytes(ptr, n).map_err(|e| e.to_string())?;
        Types::parse(&bytes)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    });
    Some(parsed.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_budget_is_spent_once() {
        let mut budget = CAPTURE_BYTES;
        spend(&mut budget, CAPTURE_BYTES - 8).unwrap();
        spend(&mut budget, 8).unwrap();
        let e = spend(&mut budget, 1).unwrap_err();
        assert!(e.contains("1024 KiB"), "{e}");
        assert_eq!(budget, 0);
    }
}
