//! Training-time distortions (Graham's CIFAR-10 recipe): each part is switched off by its zero.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which distortions the training loader applies, drawn afresh for every image. All off by
/// default; evaluation never uses them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Shift by a whole number of pixels, uniform in `[-translate, translate]`, along each axis.
    pub translate: u32,
    /// Scale each axis by `1 + U(-stretch, stretch)`.
    pub stretch: f32,
    /// Then one of x-shear, y-shear or rotation (radians), chosen uniformly, with parameter
    /// `U(-distortion, distortion)`.
    pub distortion: f32,
    /// Per channel, multiply by `1 + U(-colour, colour)` and add `255 * U(-colour, colour)`.
    pub colour: f32,
}

impl Augmentation {
    /// Whether every part is off.
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the ranges for a network input of `input_side` pixels a side, naming the
    /// offending field.
    pub fn check(&self, input_side: usize) -> Result<(), String> {
        if self.translate as usize >= input_side {
            return Err(format!(
                "translate: {} pixels would move the image out of the network's {input_side} x \
                 {input_side} input; give less than {input_side}",
                self.translate
            ));
        }
        for (name, value, max) in [
            ("stretch", self.stretch, 0.9),
            ("distortion", self.distortion, 1.0),
            ("colour", self.colour, 1.0),
        ] {
            if !(0.0..=max).contains(&value) {
                return Err(format!("{name}: {value} is outside [0, {max}]"));
            }
        }
        Ok(())
    }

    /// One image's distortion.
    pub(crate) fn draw(&self, channels: usize, rng: &mut impl Rng) -> Transform {
        let (sx, sy) = (
            1.0 + uniform(rng, self.stretch),
            1.0 + uniform(rng, self.stretch),
        );
        let a = uniform(rng, self.distortion);
        let distortion = match rng.random_range(0..3) {
            0 => [[1.0, a], [0.0, 1.0]],
            1 => [[1.0, 0.0], [a, 1.0]],
            _ => [[a.cos(), -a.sin()], [a.sin(), a.cos()]],
        };
        let forward = matmul(distortion, [[sx, 0.0], [0.0, sy]]);
        // `check` keeps it below the input's side.
        let t = i32::try_from(self.translate).unwrap_or(i32::MAX);
        let mut gain = Vec::with_capacity(channels);
        let mut offset = Vec::with_capacity(channels);
        for _ in 0..channels {
            gain.push(1.0 + uniform(rng, self.colour));
            offset.push(255.0 * uniform(rng, self.colour));
        }
        Transform {
            flip: self.flip && rng.random_bool(0.5),
            shift: [rng.random_range(-t..=t), rng.random_range(-t..=t)],
            inverse: invert(forward),
            gain,
            offset,
        }
    }
}

/// `U(-range, range)`, or 0 without drawing when the part is off.
fn uniform(rng: &mut impl Rng, range: f32) -> f32 {
    if range > 0.0 {
        rng.random_range(-range..=range)
    } else {
        0.0
    }
}

fn matmul(a: [[f32; 2]; 2], b: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

fn invert(m: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ]
}

/// One image's distortion, as the map from an output pixel back to the source image: shift,
/// undo the linear part about the image centre, mirror; colours change per channel.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Transform {
    pub flip: bool,
    /// (x, y) shift in pixels.
    pub shift: [i32; 2],
    /// Inverse of the stretch-then-distort matrix, acting on (x, y).
    pub inverse: [[f32; 2]; 2],
    pub gain: Vec<f32>,
    pub offset: Vec<f32>,
}

impl Transform {
    #[cfg(test)]
    pub fn identity(channels: usize) -> Self {
        Self {
            flip: false,
            shift: [0, 0],
            inverse: [[1.0, 0.0], [0.0, 1.0]],
            gain: vec![1.0; channels],
            offset: vec![0.0; channels],
        }
    }

    /// Renders one channel `plane` (`rows x cols` bytes) into `out` (`side x side`), the image
    /// centred as without distortion at (`top`, `left`), sampling bilinearly; cells that map
    /// outside the image get the background pixel 0, as plain padding does. `finish` maps a
    /// pixel value to the stored value.
    #[allow(clippy::too_many_arguments)]
    pub fn render(
        &self,
        channel: usize,
        plane: &[u8],
        [rows, cols]: [usize; 2],
        [top, left]: [usize; 2],
        out: &mut [f32],
        side: usize,
        finish: impl Fn(f32) -> f32,
    ) {
        let (gain, offset) = (self.gain[channel], self.offset[channel]);
        let pixel = |r: isize, c: isize| -> f32 {
            if r < 0 || c < 0 || r >= rows as isize || c >= cols as isize {
                0.0
            } else {
                plane[r as usize * cols + c as usize] as f32 * gain + offset
            }
        };
        let (cy, cx) = ((rows as f32 - 1.0) / 2.0, (cols as f32 - 1.0) / 2.0);
        let [[a, b], [c, d]] = self.inverse;
        for y in 0..side {
            let py = y as f32 - top as f32 - cy - self.shift[1] as f32;
            for x in 0..side {
                let px = x as f32 - left as f32 - cx - self.shift[0] as f32;
                let mut qx = a * px + b * py + cx;
                let qy = c * px + d * py + cy;
                if self.flip {
                    qx = cols as f32 - 1.0 - qx;
                }
                let (x0, y0) = (qx.floor(), qy.floor());
                let (fx, fy) = (qx - x0, qy - y0);
                let (x0, y0) = (x0 as isize, y0 as isize);
                // Exact at whole coordinates: the other three weights are zero.
                let value = pixel(y0, x0) * (1.0 - fx) * (1.0 - fy)
                    + pixel(y0, x0 + 1) * fx * (1.0 - fy)
                    + pixel(y0 + 1, x0) * (1.0 - fx) * fy
                    + pixel(y0 + 1, x0 + 1) * fx * fy;
                out[y * side + x] = finish(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    /// Renders a 2x3 image into a 4x4 canvas with `t`, values as plain pixel numbers.
    fn render(t: &Transform) -> Vec<f32> {
        let plane = [1, 2, 3, 4, 5, 6];
        let mut out = vec![-1.0; 16];
        t.render(0, &plane, [2, 3], [1, 0], &mut out, 4, |v| v);
        out
    }

    #[test]
    fn identity_places_the_image_as_plain_padding_does() {
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            1.0, 2.0, 3.0, 0.0,
            4.0, 5.0, 6.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(render(&Transform::identity(1)), expected);
    }

    #[test]
    fn flip_mirrors_exactly() {
        let t = Transform {
            flip: true,
            ..Transform::identity(1)
        };
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            3.0, 2.0, 1.0, 0.0,
            6.0, 5.0, 4.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(render(&t), expected);
    }

    #[test]
    fn translation_shifts_exactly() {
        let t = Transform {
            shift: [1, -1],
            ..Transform::identity(1)
        };
        #[rustfmt::skip]
        let expected = [
            0.0, 1.0, 2.0, 3.0,
            0.0, 4.0, 5.0, 6.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(render(&t), expected);
    }

    #[test]
    fn zero_parameters_draw_the_identity() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20 {
            assert_eq!(
                Augmentation::default().draw(3, &mut rng),
                Transform::identity(3)
            );
        }
    }

    #[test]
    fn rotation_by_a_quarter_turn_about_the_centre() {
        // A 3x3 image rotated by 90 degrees: a pure index permutation, checked against the
        // hand-computed layout (y down, so +pi/2 turns the top row into the right column).
        let plane: Vec<u8> = (1..=9).collect();
        let half_pi = std::f32::consts::FRAC_PI_2;
        let t = Transform {
            inverse: invert([
                [half_pi.cos(), -half_pi.sin()],
                [half_pi.sin(), half_pi.cos()],
            ]),
            ..Transform::identity(1)
        };
        let mut out = vec![0.0; 9];
        t.render(0, &plane, [3, 3], [0, 0], &mut out, 3, |v| v);
        let rounded: Vec<f32> = out.iter().map(|v| v.round()).collect();
        assert_eq!(rounded, [7.0, 4.0, 1.0, 8.0, 5.0, 2.0, 9.0, 6.0, 3.0]);
    }

    #[test]
    fn draws_stay_in_their_ranges() {
        let aug = Augmentation {
            flip: true,
            translate: 16,
            stretch: 0.2,
            distortion: 0.2,
            colour: 0.1,
        };
        let mut rng = StdRng::seed_from_u64(2);
        let mut flips = 0;
        for _ in 0..400 {
            let t = aug.draw(3, &mut rng);
            flips += t.flip as usize;
            assert!(t.shift.iter().all(|s| s.abs() <= 16));
            assert!(t.gain.iter().all(|g| (0.9..=1.1).contains(g)));
            assert!(t.offset.iter().all(|o| o.abs() <= 25.5));
        }
        assert!((150..250).contains(&flips), "{flips} flips in 400");
        assert!(aug.check(94).is_ok());
        for (bad, field) in [
            (
                Augmentation {
                    stretch: 2.0,
                    ..aug.clone()
                },
                "stretch",
            ),
            (
                Augmentation {
                    distortion: f32::NAN,
                    ..aug.clone()
                },
                "distortion",
            ),
            (
                Augmentation {
                    colour: f32::INFINITY,
                    ..aug.clone()
                },
                "colour",
            ),
            (
                Augmentation {
                    translate: 3_000_000_000,
                    ..aug.clone()
                },
                "translate",
            ),
            (
                Augmentation {
                    translate: 94,
                    ..aug.clone()
                },
                "translate",
            ),
        ] {
            let err = bad.check(94).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
    }
}
