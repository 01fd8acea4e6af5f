//! SLIT: relative distances between NUMA nodes (ACPI 6.5 section 5.2.17).
//!
//! The body is the node count as a u64, then an N x N byte matrix, row i
//! being the distances from node i. Linux drops a SLIT whose diagonal is not
//! 10 or whose other entries are not above 10 (`slit_valid`), silently, so
//! we refuse to build one.

use super::{AcpiError, sdt};

pub const SIGNATURE: [u8; 4] = *b"SLIT";
pub const REVISION: u8 = 1;
/// Distance of a node to itself.
pub const LOCAL_DISTANCE: u32 = 10;
/// Largest distance; 255 means "unreachable".
pub const MAX_DISTANCE: u32 = 255;

/// Checks that `distances` is a square matrix Linux accepts.
pub fn check_distances(distances: &[Vec<u32>]) -> Result<(), AcpiError> {
    let n = distances.len();
    for (from, row) in distances.iter().enumerate() {
        if row.len() != n {
            return Err(AcpiError::DistanceRow {
                row: from,
                got: row.len(),
                nodes: n,
            });
        }
        for (to, &value) in row.iter().enumerate() {
            let rule = if from == to && value != LOCAL_DISTANCE {
                "a node's distance to itself must be 10"
            } else if from != to && !(LOCAL_DISTANCE + 1..=MAX_DISTANCE).contains(&value) {
                "distances between different nodes must be 11..=255 (255: unreachable)"
            } else {
                continue;
            };
            return Err(AcpiError::BadDistance {
                from,
                to,
                value,
                rule,
            });
        }
    }
    Ok(())
}

/// The SLIT for `distances[from][to]`.
pub fn slit_bytes(distances: &[Vec<u32>]) -> Result<Vec<u8>, AcpiError> {
    check_distances(distances)?;
    let mut body = (distances.len() as u64).to_le_bytes().to_vec();
    // check_distances() bounds every value to 10..=255.
    body.extend(distances.iter().flatten().map(|&d| d as u8));
    Ok(sdt::table(SIGNATURE, REVISION, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_nodes() {
        let t = slit_bytes(&[vec![10, 20], vec![20, 10]]).unwrap();
        assert_eq!(t.len(), 36 + 8 + 4);
        assert_eq!(&t[0..4], b"SLIT");
        assert_eq!(t[8], 1);
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(t[36..44], 2u64.to_le_bytes());
        assert_eq!(t[44..], [10, 20, 20, 10]);
    }

    #[test]
    fn four_nodes_row_major() {
        let d = vec![
            vec![10, 16, 22, 28],
            vec![16, 10, 16, 22],
            vec![22, 16, 10, 16],
            vec![28, 22, 16, 10],
        ];
        let t = slit_bytes(&d).unwrap();
        assert_eq!(t.len(), 36 + 8 + 16);
        assert_eq!(sdt::byte_sum(&t), 0);
        assert_eq!(t[36..44], 4u64.to_le_bytes());
        assert_eq!(t[44..48], [10, 16, 22, 28]);
        assert_eq!(t[56..60], [28, 22, 16, 10]);
        assert_eq!(crate::vm::kvm::acpi::parse::parse_slit(&t).unwrap(), d);
    }

    #[test]
    fn asymmetric_is_kept() {
        let t = slit_bytes(&[vec![10, 20], vec![30, 10]]).unwrap();
        assert_eq!(t[44..], [10, 20, 30, 10]);
    }

    #[test]
    fn rejects_what_linux_would_drop() {
        let bad = |d: Vec<Vec<u32>>| slit_bytes(&d).unwrap_err();
        assert!(matches!(
            bad(vec![vec![10, 20], vec![20]]),
            AcpiError::DistanceRow {
                row: 1,
                got: 1,
                nodes: 2
            }
        ));
        assert!(matches!(
            bad(vec![vec![0, 20], vec![20, 10]]),
            AcpiError::BadDistance {
                from: 0,
                to: 0,
                value: 0,
                ..
            }
        ));
        assert!(matches!(
            bad(vec![vec![10, 10], vec![20, 10]]),
            AcpiError::BadDistance {
                from: 0,
                to: 1,
                value: 10,
                ..
            }
        ));
        assert!(matches!(
            bad(vec![vec![10, 20], vec![256, 10]]),
            AcpiError::BadDistance {
                from: 1,
                to: 0,
                value: 256,
                ..
            }
        ));
    }
}
