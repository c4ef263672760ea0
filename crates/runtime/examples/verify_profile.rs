//! Repeats a target pass over N new tokens after 200 cached ones, for profiling.
//!
//! cargo run --release -p temper-runtime --example verify_profile -- MODEL N
use std::time::Instant;
use temper_runtime::{LoadOptions, Logits, Model};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m = Model::load(std::path::Path::new(&args[1]), &LoadOptions::default()).unwrap();
    let n: usize = args[2].parse().unwrap();
    let prompt: Vec<u32> = (0..200).map(|i| (i * 37 % 40000) as u32 + 100).collect();
    let mut c = m.new_cache(300).unwrap();
    m.forward(&prompt, &mut c, Logits::Last).unwrap();
    let t = Instant::now();
    for _ in 0..200 {
        c.truncate(200);
        m.forward(&prompt[..n], &mut c, Logits::All).unwrap();
    }
    println!("N={n}: {:.2} ms", t.elapsed().as_secs_f64() * 1e3 / 200.0);
}
