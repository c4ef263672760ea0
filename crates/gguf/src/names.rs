//! GGUF tensor names to Hugging Face names, and the q/k row order llama.cpp changed.

/// What becomes of one GGUF tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// Written under this Hugging Face name.
    Tensor(Hf),
    /// Not a weight of the Hugging Face model (recomputed by it); dropped with a note.
    Skip(&'static str),
    /// A name this importer does not know: importing without it would give a broken model.
    Unknown,
}

/// A Hugging Face tensor name and what it is, for the q/k un-permutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hf {
    pub name: String,
    pub role: Role,
    /// Decoder layer index (`None` for embeddings, the final norm, the LM head).
    pub layer: Option<usize>,
}

/// Which projection a tensor belongs to, where that matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Query,
    Key,
    Other,
}

/// The per-block tensors of a Llama-family decoder layer: GGUF stem, Hugging Face stem.
const BLOCK_PARTS: [(&str, &str); 9] = [
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// GGUF names of the tensors every layer must have.
pub fn required_block_tensors(layer: usize) -> impl Iterator<Item = String> {
    BLOCK_PARTS
        .iter()
        .map(move |(g, _)| format!("blk.{layer}.{g}.weight"))
}

/// Maps one GGUF tensor name (llama and qwen2 share the scheme).
pub fn map_name(gguf: &str) -> Mapping {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        // llama.cpp's precomputed Llama 3.1 rope frequency factors: Hugging Face
        // derives them from `rope_scaling` in config.json instead.
        "rope_freqs.weight" => {
            return Mapping::Skip(
                "Llama 3 rope frequency factors (set by `rope_scaling` in config.json)",
            )
        }
        _ => None,
    };
    if let Some(name) = top {
        return Mapping::Tensor(Hf {
            name: name.to_string(),
            role: Role::Other,
            layer: None,
        });
    }
    let Some(rest) = gguf.strip_prefix("blk.") else {
        return Mapping::Unknown;
    };
    let Some((index, rest)) = rest.split_once('.') else {
        return Mapping::Unknown;
    };
    let Ok(layer) = index.parse::<usize>() else {
        return Mapping::Unknown;
    };
    let Some((stem, suffix)) = rest.rsplit_once('.') else {
        return Mapping::Unknown;
    };
    if stem == "attn_rot_embd" {
        // Old converters stored the rotary inverse frequencies; models recompute them.
        return Mapping::Skip("rotary inverse frequencies (recomputed from rope_theta)");
    }
    if suffix != "weight" && suffix != "bias" {
        return Mapping::Unknown;
    }
    let Some((_, hf_stem)) = BLOCK_PARTS.iter().find(|(g, _)| *g == stem) else {
        return Mapping::Unknown;
    };
    let role = match stem {
        "attn_q" => Role::Query,
        "attn_k" => Role::Key,
        _ => Role::Other,
    };
    Mapping::Tensor(Hf {
        name: format!("model.layers.{layer}.{hf_stem}.{suffix}"),
        role,
        layer: Some(layer),
    })
}

/// Where each Hugging Face row of a q or k projection lives in the GGUF tensor.
///
/// llama.cpp's converter reorders the rows of each head from the half-split rotary
/// layout Hugging Face uses (first half of a head's dimensions pairs with the second
/// half) to interleaved pairs (0 with 1, 2 with 3, ...): HF row `i * half + j` of a
/// head becomes GGUF row `2 * j + i`. This returns, for HF row `r`, its GGUF row.
pub fn unpermuted_source_row(r: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    let (head, within) = (r / head_dim, r % head_dim);
    let (i, j) = (within / half, within % half);
    head * head_dim + 2 * j + i
}

/// Checks that `rows` split into `n_heads` heads of even size; returns the head size.
pub fn head_dim_for(rows: usize, n_heads: usize) -> Option<usize> {
    if n_heads == 0 || !rows.is_multiple_of(n_heads) {
        return None;
    }
    let head_dim = rows / n_heads;
    (head_dim > 0 && head_dim.is_multiple_of(2)).then_some(head_dim)
}

/// The order tensors take in the written file: embeddings, then layer by layer (each
/// in Hugging Face's usual module order), then the final norm and the LM head.
pub fn output_order(hf: &Hf) -> (usize, usize, String) {
    match hf.layer {
        None if hf.name.starts_with("model.embed_tokens") => (0, 0, hf.name.clone()),
        None => (2, 0, hf.name.clone()),
        Some(layer) => (1, layer, hf.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_llama_scheme() {
        let m = |n: &str| match map_name(n) {
            Mapping::Tensor(hf) => hf.name,
            other => panic!("{n}: {other:?}"),
        };
        assert_eq!(m("token_embd.weight"), "model.embed_tokens.weight");
        assert_eq!(m("output_norm.weight"), "model.norm.weight");
        assert_eq!(m("output.weight"), "lm_head.weight");
        assert_eq!(
            m("blk.0.attn_norm.weight"),
            "model.layers.0.input_layernorm.weight"
        );
        assert_eq!(
            m("blk.12.ffn_norm.weight"),
            "model.layers.12.post_attention_layernorm.weight"
        );
        assert_eq!(
            m("blk.3.attn_q.bias"),
            "model.layers.3.self_attn.q_proj.bias"
        );
        assert_eq!(
            m("blk.3.attn_output.weight"),
            "model.layers.3.self_attn.o_proj.weight"
        );
        assert_eq!(
            m("blk.29.ffn_down.weight"),
            "model.layers.29.mlp.down_proj.weight"
        );
        assert!(matches!(
            map_name("blk.0.attn_k.weight"),
            Mapping::Tensor(Hf {
                role: Role::Key,
                ..
            })
        ));
        assert!(matches!(map_name("rope_freqs.weight"), Mapping::Skip(_)));
        assert_eq!(map_name("blk.0.ffn_gate_exps.weight"), Mapping::Unknown);
        assert_eq!(map_name("blk.x.attn_q.weight"), Mapping::Unknown);
        assert_eq!(map_name("blk.0.attn_q.scale"), Mapping::Unknown);
        assert_eq!(map_name("pos_embd.weight"), Mapping::Unknown);
    }

    /// llama.cpp's forward permutation, written independently as its reshape:
    /// `[n_head, 2, half, in] -> swap(1, 2) -> [n_head, half, 2, in]`.
    fn permute_like_llama_cpp(rows: &[u32], n_head: usize) -> Vec<u32> {
        let head_dim = rows.len() / n_head;
        let half = head_dim / 2;
        let mut out = Vec::new();
        for h in 0..n_head {
            for j in 0..half {
                for i in 0..2 {
                    out.push(rows[h * head_dim + i * half + j]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        for (n_head, head_dim) in [(1, 2), (3, 8), (9, 64), (2, 6)] {
            let hf: Vec<u32> = (0..(n_head * head_dim) as u32).collect();
            let gguf = permute_like_llama_cpp(&hf, n_head);
            let back: Vec<u32> = (0..hf.len())
                .map(|r| gguf[unpermuted_source_row(r, head_dim)])
                .collect();
            assert_eq!(back, hf, "n_head {n_head} head_dim {head_dim}");
        }
        assert_eq!(head_dim_for(576, 9), Some(64));
        assert_eq!(head_dim_for(192, 3), Some(64));
        assert_eq!(head_dim_for(10, 4), None);
        assert_eq!(head_dim_for(9, 3), None);
    }
}
