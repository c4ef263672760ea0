use std::time::Instant;
use temper_runtime::{LoadOptions, Logits, Model};
fn main() {
    let dir = std::env::args().nth(1).unwrap();
    let m = Model::load(std::path::Path::new(&dir), &LoadOptions::default()).unwrap();
    let prompt: Vec<u32> = (0..200).map(|i| (i * 37 % 40000) as u32 + 100).collect();
    for n in [1usize, 2, 3, 4, 5, 6, 8, 12, 16] {
        let mut times = vec![];
        for _ in 0..15 {
            let mut c = m.new_cache(300).unwrap();
            m.forward(&prompt, &mut c, Logits::Last).unwrap();
            let t = Instant::now();
            m.forward(&prompt[..n], &mut c, Logits::All).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!("N={n} median {:.2} ms", times[7]);
    }
}
