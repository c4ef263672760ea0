//! On-demand prices of SageMaker real-time inference instances, USD per hour, as far as a
//! citable source gives them.
//!
//! **Second-hand and dated.** AWS's own price page could not be read here (it loads its
//! table with JavaScript). These are the prices of AWS's sample repository FMBench,
//! `fmbench/configs/pricing.yml` (and `pricing_fallback.yml` beside it), last changed
//! 2025-01-26: <https://github.com/aws-samples/foundation-model-benchmarking-tool>. Its
//! P-family prices predate AWS's June 2025 P4/P5 price cut and its trn1 price conflicts
//! with other listings, so those are left out rather than quoted wrong. Operators give
//! their own (region, discounts, newer prices) with `temper-server --price-list FILE`,
//! which takes precedence; an instance with no known price gets no cost figures.

/// `(instance type, USD per hour)`.
pub const PRICES: [(&str, f64); 18] = [
    ("ml.g4dn.xlarge", 0.7364),
    ("ml.g4dn.12xlarge", 4.89),
    ("ml.g5.xlarge", 1.4084),
    ("ml.g5.2xlarge", 1.515),
    ("ml.g5.4xlarge", 2.03),
    ("ml.g5.8xlarge", 3.06),
    ("ml.g5.12xlarge", 7.09),
    ("ml.g5.24xlarge", 10.18),
    ("ml.g5.48xlarge", 20.36),
    ("ml.g6.2xlarge", 1.222),
    ("ml.g6.12xlarge", 5.752),
    ("ml.g6.16xlarge", 4.246),
    ("ml.g6.24xlarge", 8.344),
    ("ml.g6.48xlarge", 16.688),
    ("ml.inf2.xlarge", 0.99),
    ("ml.inf2.8xlarge", 2.36),
    ("ml.inf2.24xlarge", 7.79),
    ("ml.inf2.48xlarge", 15.58),
];

/// The bundled price of `instance`, if a citable one is known.
pub fn price_per_hour(instance: &str) -> Option<f64> {
    PRICES
        .iter()
        .find(|(name, _)| *name == instance)
        .map(|&(_, price)| price)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_known_only_where_sourced() {
        assert_eq!(price_per_hour("ml.g5.xlarge"), Some(1.4084));
        assert_eq!(price_per_hour("ml.p5.48xlarge"), None);
        assert_eq!(price_per_hour("ml.trn1.32xlarge"), None);
        for (name, _) in PRICES {
            assert!(crate::Instance::lookup(name).is_ok(), "{name}");
        }
    }
}
