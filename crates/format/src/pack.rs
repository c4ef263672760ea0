//! compressed-tensors `pack-quantized` with 8 bits (4 bits below): a weight `[rows, cols]` of INT8 codes is
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

/// compressed-tensors pack-quantized with 4 bits: each code is stored as `code + 8` (a nibble
/// `0..=15`), eight per little-endian int32 along the input dimension, the first in the lowest
/// bits. Byte for byte that is two nibbles per byte, the even element in the low nibble: the
/// runtime's INT4 layout. `nibbles` holds one stored value (`0..=15`) per element, an even
/// count.
pub fn pack_int4(nibbles: &[u8]) -> Vec<u8> {
    nibbles
        .chunks_exact(2)
        .map(|p| (p[0] & 0x0F) | (p[1] << 4))
        .collect()
}

/// The stored nibbles (`0..=15`) of `pack_int4`'s bytes, two per byte.
pub fn unpack_int4(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().flat_map(|&b| [b & 0x0F, b >> 4]).collect()
}

/// `weight_zero_point` of a 4-bit scheme: stored zero points (`zero + 8`, `0..=15`) of a `[rows,
/// groups]` matrix packed eight per int32 along the *output* dimension (compressed-tensors'
/// `packed_dim=0`): word `(p, g)` holds rows `8p..8p + 8` of column `g`, row `8p + i` in nibble
/// `i`; rows past the end are 0. Returns the bytes of an I32 `[ceil(rows / 8), groups]` tensor.
pub fn pack_int4_columns(nibbles: &[u8], rows: usize, groups: usize) -> Vec<u8> {
    assert_eq!(
        nibbles.len(),
        rows * groups,
        "zero points must be rows x groups"
    );
    let mut words = vec![0u32; rows.div_ceil(8) * groups];
    for r in 0..rows {
        for g in 0..groups {
            words[(r / 8) * groups + g] |=
                u32::from(nibbles[r * groups + g] & 0x0F) << (4 * (r % 8));
        }
    }
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The `[rows, groups]` stored nibbles of [`pack_int4_columns`]'s bytes.
pub fn unpack_int4_columns(bytes: &[u8], rows: usize, groups: usize) -> Vec<u8> {
    assert_eq!(
        bytes.len(),
        rows.div_ceil(8) * groups * 4,
        "packed zero points have the wrong size"
    );
    let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    (0..rows * groups)
        .map(|i| {
            let (r, g) = (i / groups, i % groups);
            ((word((r / 8) * groups + g) >> (4 * (r % 8))) & 0x0F) as u8
        })
        .collect()
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
    fn int4_words_hold_eight_codes_plus_8_lowest_first() {
        // Signed codes -8..=7 stored as 0..=15: word 0 = 0x76543210 for codes -8..-1.
        let nibbles: Vec<u8> = (0..16).collect();
        let bytes = pack_int4(&nibbles);
        let w0 = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        let w1 = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!((w0, w1), (0x7654_3210, 0xFEDC_BA98));
        assert_eq!(unpack_int4(&bytes), nibbles);
    }

    #[test]
    fn int4_zero_points_pack_along_rows() {
        // 10 rows x 2 groups: rows 0..8 in word row 0, rows 8..10 in word row 1 (padded).
        let z: Vec<u8> = (0..20).map(|i| (i % 16) as u8).collect();
        let bytes = pack_int4_columns(&z, 10, 2);
        assert_eq!(bytes.len(), 2 * 2 * 4);
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        // Column 0 of rows 0..8 holds z[0], z[2], ..., z[14] = 0, 2, ..., 14.
        assert_eq!(word(0), 0xECA8_6420);
        // Column 1 of rows 8..10: z[17] = 1, z[19] = 3.
        assert_eq!(word(3), 0x31);
        assert_eq!(unpack_int4_columns(&bytes, 10, 2), z);
    }

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
