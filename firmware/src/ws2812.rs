//! The WS2812 LEDs' wire order (green, red, blue; most significant bit first), so that the
//! chip's RMT driver only turns each bit into its pulse pair.

/// One LED's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgb {
    pub r: u8,
    pub g: u8,
    pub b: u8,
}

/// The bits a strip showing `pixels` is sent, in order: 24 per LED.
pub fn bits(pixels: &[Rgb]) -> impl Iterator<Item = bool> + '_ {
    pixels
        .iter()
        .flat_map(|p| [p.g, p.r, p.b])
        .flat_map(|byte| (0..8).rev().map(move |bit| byte >> bit & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::{Rgb, bits};

    #[test]
    fn green_goes_first_and_each_byte_most_significant_bit_first() {
        let sent: String = bits(&[
            Rgb {
                r: 0x01,
                g: 0x80,
                b: 0xF0,
            },
            Rgb::default(),
        ])
        .map(|bit| if bit { '1' } else { '0' })
        .collect();
        assert_eq!(
            sent,
            [
                "10000000", "00000001", "11110000", "00000000", "00000000", "00000000"
            ]
            .concat()
        );
    }
}
