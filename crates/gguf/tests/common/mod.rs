//! Shared by the integration tests: where the real test model lives.

use std::path::{Path, PathBuf};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The test model: `$TEMPER_ASSETS/<file>` or `<workspace>/.cache/assets/<file>`.
pub fn asset() -> PathBuf {
    let dir = std::env::var_os("TEMPER_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/assets"));
    let path = dir.join(MODEL);
    assert!(
        path.is_file(),
        "test model {} is missing: run `scripts/fetch-assets.sh` (or point TEMPER_ASSETS at its directory)",
        path.display()
    );
    path
}
