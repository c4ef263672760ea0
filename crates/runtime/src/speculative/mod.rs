//! Speculative decoding with EAGLE-3 draft heads: the head ([`head`]), draft trees and how the
//! target verifies them ([`tree`]), the decoding loop ([`decode`]) and the cost model that
//! sizes the tree from measured target and head costs on this machine ([`cost`]).

pub mod cost;
pub mod decode;
pub mod head;
pub mod tree;

pub use cost::{choose_shape, CostProfile};
pub use decode::{
    generate_speculative, Drafter, EagleDrafter, SpeculativeReport, SpeculativeStats, TreeShape,
};
pub use head::{default_aux_layers, DraftConfig, DraftHead};
pub use tree::TokenTree;
