//! compressed-tensors `pack-quantized` with 8 bits: a weight `[rows, cols]` of INT8 codes is
//! stored as `weight_packed` I32 `[rows, cols / 4]`, each little-endian word holding four
//! consecutive codes of a row, each as `code + 128` (an unsigned byte), and `weight_shape`
//! I64 `[2]` holding `[rows, cols]`. Byte for byte, the packed tensor is the code sequence
//! with every top bit flipped.

/// Turns INT8 codes (as raw bytes, row-major, `cols` a multiple of 4) into the stored bytes
/// of `weight_packed`, in place. The same flip reads them back ([`unpack_int8`]).
pub fn pack_int8_in_place(code_bytes: &mut [u8]) {
    code_bytes.iter_mut().for_each(|b| *b ^= 0x80);
}

/// Reads the stored bytes of `weight_packed` back into INT8 codes.
pub fn unpack_int8(bytes: &[u8]) -> Vec<i8> {
    bytes.iter().map(|&b| (b ^ 0x80) as i8).collect()
}

/// The stored bytes of `weight_shape` (I64 little-endian `[rows, cols]`).
pub fn weight_shape_bytes(rows: usize, cols: usize) -> Vec<u8> {
    [rows as i64, cols as i64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hold_four_codes_plus_128_little_endian() {
        let codes = [-128i8, -1, 0, 127];
        let mut bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
        pack_int8_in_place(&mut bytes);
        let word = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        // code + 128 in each 8-bit lane, lane 0 lowest.
        assert_eq!(word, (127 << 8) | (128 << 16) | (255 << 24));
        assert_eq!(unpack_int8(&bytes), codes);
        let all: Vec<i8> = (i8::MIN..=i8::MAX).collect();
        let mut bytes: Vec<u8> = all.iter().map(|&c| c as u8).collect();
        pack_int8_in_place(&mut bytes);
        assert_eq!(unpack_int8(&bytes), all);
        assert_eq!(weight_shape_bytes(3, 8)[..8], 3i64.to_le_bytes());
    }
}
