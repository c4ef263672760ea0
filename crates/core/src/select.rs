//! Which tensors are Linear weights of decoder layers, decided from names and shapes
//! rather than one class per model, so new Llama-like architectures work unchanged.

use crate::checkpoint::TensorEntry;
use regex::Regex;

/// What a tensor is, as far as quantization cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A 2-D `weight` of a Linear layer inside a numbered decoder block.
    Linear,
    /// Token embeddings (kept dense: with tied embeddings they are also the LM head).
    Embedding,
    /// The output projection.
    LmHead,
    /// Anything else: norms, biases, rotary tables, ... (copied unchanged).
    Other,
}

/// Classifies a tensor by its name and shape.
pub fn classify(entry: &TensorEntry) -> Role {
    let name = entry.name.as_str();
    if name.contains("embed_tokens")
        || name.contains("wte")
        || name.ends_with("word_embeddings.weight")
    {
        return Role::Embedding;
    }
    if name == "lm_head.weight" || name.ends_with(".lm_head.weight") {
        return Role::LmHead;
    }
    let is_matrix = entry.shape.len() == 2 && entry.shape.iter().all(|&d| d > 1);
    let in_block = layer_index(name).is_some();
    let is_norm = name.contains("norm") || name.contains("ln_");
    if is_matrix && in_block && !is_norm && name.ends_with(".weight") {
        Role::Linear
    } else {
        Role::Other
    }
}

/// The decoder block number in names like `model.layers.12.mlp.up_proj.weight`,
/// `transformer.h.3.attn.c_attn.weight` or `encoder.layer.0.attention...`.
pub fn layer_index(name: &str) -> Option<usize> {
    let parts: Vec<&str> = name.split('.').collect();
    parts.windows(2).find_map(|w| match w[0] {
        "layers" | "h" | "layer" | "blocks" => w[1].parse().ok(),
        _ => None,
    })
}

/// The module a parameter belongs to: `model.layers.0.mlp.up_proj.weight` ->
/// `model.layers.0.mlp.up_proj`.
pub fn module_name(tensor: &str) -> &str {
    tensor.rsplit_once('.').map(|(m, _)| m).unwrap_or(tensor)
}

/// An ignore list as compressed-tensors and vLLM read it: plain module names match
/// exactly; entries starting with `re:` are Python `re.match` patterns (anchored at
/// the start of the module name).
#[derive(Debug, Clone)]
pub struct IgnoreList {
    entries: Vec<String>,
    patterns: Vec<(String, Regex)>,
}

impl IgnoreList {
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut patterns = Vec::new();
        for e in entries {
            if let Some(re) = e.strip_prefix("re:") {
                let anchored = format!("^(?:{re})");
                let compiled = Regex::new(&anchored)
                    .map_err(|err| format!("`{e}` is not a valid regex: {err}"))?;
                patterns.push((e.clone(), compiled));
            }
        }
        Ok(IgnoreList {
            entries: entries.to_vec(),
            patterns,
        })
    }

    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    /// Whether a module (not parameter) name is ignored.
    pub fn matches(&self, module: &str) -> bool {
        self.entries
            .iter()
            .any(|e| !e.starts_with("re:") && e == module)
            || self.patterns.iter().any(|(_, re)| re.is_match(module))
    }
}

/// Projections that vLLM fuses into one layer: all members must share one scheme, or
/// vLLM refuses the checkpoint ("different quantization schemes").
pub const FUSED_GROUPS: &[&[&str]] = &[&["q_proj", "k_proj", "v_proj"], &["gate_proj", "up_proj"]];

/// Finds a fused group whose members disagree on being ignored. Returns the members
/// that are ignored and those that are not, for the error message.
pub fn mixed_fused_group(quantized: &[&str], ignored: &[&str]) -> Option<(String, String)> {
    for group in FUSED_GROUPS {
        for module in ignored {
            let Some((prefix, leaf)) = module.rsplit_once('.') else {
                continue;
            };
            if !group.contains(&leaf) {
                continue;
            }
            let partners: Vec<String> = group
                .iter()
                .filter(|&&g| g != leaf)
                .map(|g| format!("{prefix}.{g}"))
                .filter(|p| quantized.contains(&p.as_str()))
                .collect();
            if !partners.is_empty() {
                return Some((module.to_string(), partners.join("`, `")));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::Dtype;

    fn entry(name: &str, shape: &[usize]) -> TensorEntry {
        let dir = tempfile::tempdir().unwrap();
        // Build a real entry through a one-tensor checkpoint to keep TensorEntry's fields private.
        let specs = vec![crate::writer::TensorSpec::new(
            name,
            Dtype::F32,
            shape.to_vec(),
        )];
        let w = crate::writer::ShardedWriter::create(dir.path(), &specs, 1 << 30).unwrap();
        w.write(name, &vec![0; shape.iter().product::<usize>() * 4])
            .unwrap();
        w.finish().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type":"llama","hidden_size":4,"intermediate_size":4,"num_hidden_layers":1,"num_attention_heads":1,"vocab_size":4}"#,
        )
        .unwrap();
        crate::checkpoint::Checkpoint::open(dir.path())
            .unwrap()
            .tensors()[0]
            .clone()
    }

    #[test]
    fn roles_from_names_and_shapes() {
        assert_eq!(
            classify(&entry("model.layers.0.self_attn.q_proj.weight", &[8, 4])),
            Role::Linear
        );
        assert_eq!(
            classify(&entry("model.layers.0.self_attn.q_proj.bias", &[8])),
            Role::Other
        );
        assert_eq!(
            classify(&entry("model.layers.0.input_layernorm.weight", &[4])),
            Role::Other
        );
        assert_eq!(
            classify(&entry("model.embed_tokens.weight", &[16, 4])),
            Role::Embedding
        );
        assert_eq!(classify(&entry("lm_head.weight", &[16, 4])), Role::LmHead);
        assert_eq!(classify(&entry("model.norm.weight", &[4])), Role::Other);
        assert_eq!(
            classify(&entry(
                "encoder.layer.3.attention.self.query.weight",
                &[4, 4]
            )),
            Role::Linear
        );
    }

    #[test]
    fn ignore_list_matches_like_vllm() {
        let list = IgnoreList::parse(&["lm_head".into(), "re:.*mlp\\.down_proj".into()]).unwrap();
        assert!(list.matches("lm_head"));
        assert!(!list.matches("model.lm_head2"));
        assert!(list.matches("model.layers.3.mlp.down_proj"));
        assert!(!list.matches("model.layers.3.mlp.up_proj"));
        assert!(IgnoreList::parse(&["re:(".into()])
            .unwrap_err()
            .contains("re:("));
    }

    #[test]
    fn mixed_fused_groups_are_found() {
        let q = [
            "m.layers.0.self_attn.k_proj",
            "m.layers.0.self_attn.v_proj",
            "m.layers.0.mlp.up_proj",
        ];
        let (ignored, partners) = mixed_fused_group(&q, &["m.layers.0.self_attn.q_proj"]).unwrap();
        assert_eq!(ignored, "m.layers.0.self_attn.q_proj");
        assert!(partners.contains("k_proj") && partners.contains("v_proj"));
        assert!(mixed_fused_group(&q, &["m.layers.0.mlp.down_proj"]).is_none());
    }
}
