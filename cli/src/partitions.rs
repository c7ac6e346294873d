//! Loading an ESP-IDF partition table (CSV or binary) without trusting the file.

use std::path::{Path, PathBuf};

use esp_idf_part::PartitionTable;

use crate::guard::{Panicked, catch_panic};

/// Where the partition table sits in flash; the bootloader lies below it.
pub const TABLE_OFFSET: u32 = 0x8000;
/// The table's own extent: partitions must start at or after this.
pub const TABLE_END: u32 = 0x9000;
/// The first two bytes of a binary table entry.
const BINARY_MAGIC: [u8; 2] = [0xAA, 0x50];
/// A binary table is at most one 4 KiB sector; a CSV table is far smaller than 1 MiB.
const MAX_TABLE_FILE: u64 = 1 << 20;

/// Why a partition table could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read partition table {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("partition table {path} is {len} bytes, too large for a partition table")]
    TooLarge { path: PathBuf, len: u64 },
    #[error("partition table {path} is neither UTF-8 CSV text nor a binary table (starting AA 50)")]
    NotATable { path: PathBuf },
    #[error("partition table {path} is refused by ESP-IDF's rules: {source}")]
    Refused {
        path: PathBuf,
        source: esp_idf_part::Error,
    },
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// Reads a table from a CSV file or a binary table (as flashed at 0x8000).
pub fn load(path: &Path) -> Result<PartitionTable, TableError> {
    let read_error = |source| TableError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_TABLE_FILE {
        return Err(TableError::TooLarge {
            path: path.to_owned(),
            len,
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    parse(&bytes, path)
}

/// Parses table bytes; `path` only names them in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<PartitionTable, TableError> {
    let what = format!("partition table {}", path.display());
    let parsed = if bytes.starts_with(&BINARY_MAGIC) {
        let owned = bytes.to_vec();
        catch_panic(&what, move || PartitionTable::try_from_bytes(owned))?
    } else {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| TableError::NotATable {
                path: path.to_owned(),
            })?
            .to_owned();
        catch_panic(&what, move || PartitionTable::try_from_str(text))?
    };
    parsed.map_err(|source| TableError::Refused {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CSV: &str = "\
# Name,   Type, SubType, Offset,   Size
nvs,      data, nvs,     0x9000,   0x5000
otadata,  data, ota,     0xe000,   0x2000
app0,     app,  ota_0,   0x10000,  0x100000
";

    #[test]
    fn csv_and_its_binary_form_load_alike() {
        let table = parse(CSV.as_bytes(), Path::new("t.csv")).unwrap();
        assert_eq!(table.partitions().len(), 3);
        let binary = table.to_bin().unwrap();
        let again = parse(&binary, Path::new("t.bin")).unwrap();
        assert_eq!(again, table);
    }

    #[test]
    fn garbage_is_named_not_panicked_on() {
        let path = Path::new("bad.bin");
        assert!(matches!(
            parse(&[0xFF, 0xFE, 0x80], path),
            Err(TableError::NotATable { .. })
        ));
        assert!(parse(&[0xAA, 0x50, 1], path).is_err());
        assert!(parse(b"", path).is_err());
        assert!(parse(b",,,,", path).is_err());
    }

    proptest! {
        #[test]
        fn no_binary_input_panics(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut bytes = BINARY_MAGIC.to_vec();
            bytes.extend(tail);
            let _ = parse(&bytes, Path::new("fuzz.bin"));
        }

        #[test]
        fn no_mutated_binary_table_panics(at in 0usize..3072, value in any::<u8>()) {
            let mut bytes = parse(CSV.as_bytes(), Path::new("t.csv")).unwrap().to_bin().unwrap();
            bytes[at] = value;
            let _ = parse(&bytes, Path::new("mutated.bin"));
        }

        #[test]
        fn no_csv_input_panics(text in "[a-z0-9_, x\\n#]{0,200}") {
            let _ = parse(text.as_bytes(), Path::new("fuzz.csv"));
        }
    }
}
