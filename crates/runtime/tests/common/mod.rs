//! Shared by the runtime's tests on the real model.

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct directory `scripts/test.sh` imports into `.cache/models`.
pub fn smollm2() -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/smollm2-135m-instruct");
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run scripts/test.sh (it imports the model) first",
        dir.display()
    );
    dir
}
