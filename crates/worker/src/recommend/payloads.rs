//! Sample payloads: SageMaker's `SamplePayloadUrl` names a tar archive (gzipped or not) of
//! request files, each one request body. Without one, a job sends a stock request.

use std::io::Read;
use std::path::Path;

/// At most this many payload files are read (the rest of an archive is left out).
const MAX_FILES: usize = 1000;
/// A payload file larger than this is refused (a request body, not a data set).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One request body and the archive member it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplePayload {
    pub name: String,
    pub body: Vec<u8>,
}

/// Reads every regular file of the archive at `path`, in archive order.
pub fn read_archive(path: &Path) -> Result<Vec<SamplePayload>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let mut reader = std::io::BufReader::new(file);
    let gzipped = {
        use std::io::BufRead;
        let head = reader
            .fill_buf()
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let source: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let bad = |e: std::io::Error| {
        format!(
            "{} is not a readable tar archive of request files ({e}); SamplePayloadUrl must \
             name a .tar or .tar.gz whose files are request bodies",
            path.display()
        )
    };
    let mut archive = tar::Archive::new(source);
    let mut out = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(bad)?.display().to_string();
        // macOS tar adds AppleDouble files beside each file: not requests.
        if name.rsplit('/').next().is_some_and(|f| f.starts_with("._")) {
            continue;
        }
        if entry.size() > MAX_FILE_BYTES {
            return Err(format!(
                "{name} in {} is {} bytes; a sample payload is one request body, at most {} bytes",
                path.display(),
                entry.size(),
                MAX_FILE_BYTES
            ));
        }
        let mut body = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut body).map_err(bad)?;
        out.push(SamplePayload { name, body });
        if out.len() == MAX_FILES {
            break;
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{} holds no files; SamplePayloadUrl must name a tar of request bodies",
            path.display()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(path: &Path, gzip: bool, files: &[(&str, &[u8])]) {
        let file = std::fs::File::create(path).unwrap();
        let write = |w: &mut dyn std::io::Write| {
            let mut builder = tar::Builder::new(w);
            for (name, body) in files {
                let mut header = tar::Header::new_gnu();
                header.set_size(body.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                builder.append_data(&mut header, name, *body).unwrap();
            }
            builder.finish().unwrap();
        };
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
            write(&mut gz);
            gz.finish().unwrap();
        } else {
            let mut f = file;
            write(&mut f);
        }
    }

    #[test]
    fn archives_plain_or_gzipped_give_their_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for gzip in [false, true] {
            let path = dir.path().join(format!("p-{gzip}.tar"));
            archive(
                &path,
                gzip,
                &[
                    ("payloads/a.json", br#"{"inputs": "a"}"#),
                    ("payloads/._a.json", b"junk"),
                    ("payloads/b.json", br#"{"inputs": "b"}"#),
                ],
            );
            let got = read_archive(&path).unwrap();
            let names: Vec<&str> = got.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(names, ["payloads/a.json", "payloads/b.json"]);
            assert_eq!(got[1].body, br#"{"inputs": "b"}"#);
        }
        let junk = dir.path().join("junk.tar");
        std::fs::write(&junk, b"not a tar at all, just some words").unwrap();
        let e = read_archive(&junk).unwrap_err();
        assert!(e.contains("junk.tar"), "{e}");
        let empty = dir.path().join("empty.tar");
        archive(&empty, false, &[]);
        assert!(read_archive(&empty).unwrap_err().contains("holds no files"));
    }
}
