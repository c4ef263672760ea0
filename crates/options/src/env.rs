//! Reading `OPTION_*` values: trimmed, with one parser per kind of value so every option
//! reports a bad value the same way.

use crate::error::{invalid, Result};
use std::collections::BTreeMap;

/// The options one pass (or the whole job) sees.
pub struct Env<'a> {
    map: &'a BTreeMap<String, String>,
}

impl<'a> Env<'a> {
    pub fn new(map: &'a BTreeMap<String, String>) -> Self {
        Env { map }
    }

    /// The trimmed value, `None` when unset.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(|v| v.trim())
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(invalid(key, v, "true or false")),
            },
        }
    }

    /// A whole number of at least `min`.
    pub fn count(&self, key: &str, default: usize, min: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= min)
                .ok_or_else(|| invalid(key, v, &format!("a whole number of at least {min}"))),
        }
    }
}
