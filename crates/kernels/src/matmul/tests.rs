//! Unit tests of paths the public API cannot force: the AVX-512 BW integer dots on a CPU that
//! has VNNI (the public API always prefers VNNI there).

use super::{Matrix, Weights};

#[cfg(target_arch = "x86_64")]
#[test]
fn avx512_int8_dots_bw_equal_vnni_and_reference() {
    use super::avx512::Avx512;
    use crate::Isa;

    if Isa::detect() < Isa::Avx512 {
        return;
    }
    let b = Avx512::new(Isa::Avx512.usable());
    let mut state = 0x1234_5678_9ABC_DEF1u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (rows, cols, tokens) in [
        (7, 200, 5),
        (9, 64, 3),
        (4, 1, 2),
        (13, 333, 7),
        (5, 130, 1),
    ] {
        let mut codes: Vec<i8> = (0..rows * cols).map(|_| next() as i8).collect();
        // Extremes: a row of -128 and one of 127.
        codes[..cols].fill(i8::MIN);
        codes[cols..2 * cols].fill(i8::MAX);
        let scales = vec![1.0; rows];
        let w = Matrix::new(
            rows,
            cols,
            Weights::Int8 {
                codes: codes.clone(),
                scales,
                group: cols,
            },
        )
        .unwrap();
        let mut xq: Vec<i8> = (0..tokens * cols)
            .map(|_| (next() % 255) as i8 as i16 as i8)
            .map(|v| v.max(-127))
            .collect();
        xq[..cols].fill(-127);
        let reference: Vec<i32> = (0..tokens)
            .flat_map(|t| {
                let (xq, codes) = (&xq, &codes);
                (0..rows).map(move |r| {
                    (0..cols)
                        .map(|j| i32::from(xq[t * cols + j]) * i32::from(codes[r * cols + j]))
                        .sum()
                })
            })
            .collect();
        for vnni in [false, true] {
            let mut out = vec![0i32; tokens * rows];
            b.int8_dots_with(vnni, &w, 0, rows, &xq, tokens, &mut out);
            assert_eq!(out, reference, "vnni={vnni} {rows}x{cols} m={tokens}");
        }
    }
}
