//! File digests recorded in manifests.

use crate::{IoContext, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// A file's SHA-256 (lower-case hex) and size, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    Ok(sha256_file_unless(path, &|| false)?.expect("never stopped"))
}

/// As [`sha256_file`], but checks `stop` before each block and returns `None` as soon
/// as it says so (a cancelled job must not wait for a multi-GB file to be read).
pub fn sha256_file_unless(
    path: &Path,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Option<(String, u64)>> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        if stop() {
            return Ok(None);
        }
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let digest = hasher.finalize();
    Ok(Some((
        digest.iter().map(|b| format!("{b:02x}")).collect(),
        total,
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        let (hex, n) = super::sha256_file(&p).unwrap();
        assert_eq!(n, 3);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
