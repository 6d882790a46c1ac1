//! Image files and drawings as the network's input. A file's declared size is checked before
//! it is decoded. Grey images on a mostly light ground are inverted (MNIST and Fashion-MNIST
//! have light on black), and a digit for an MNIST network is laid out as MNIST's were (LeCun et
//! al.): its ink scaled, keeping its aspect ratio, to fit a 20 x 20 box, then placed in the
//! 28 x 28 field with its centre of mass at the centre. Without that, a small or off-centre
//! digit reads as something else.

use std::path::Path;

use anyhow::{Context, Result, bail};
use data::{DatasetKind, ImageItem};
use image::{DynamicImage, GrayImage, imageops::FilterType};

/// The most pixels an image may declare: Pillow's `MAX_IMAGE_PIXELS`, a quarter of a gigabyte
/// of RGB. An image is checked against it before it is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 89_478_485;

/// Side of the box MNIST's digits were scaled into, and of the field they were centred in.
const MNIST_BOX: u32 = 20;
const MNIST_FIELD: u32 = 28;

/// How an image becomes the network's input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preparation {
    /// Invert grey levels: always (`--invert`), or only on a mostly light ground.
    pub invert: Invert,
    /// Lay a digit out as MNIST's were (MNIST networks only).
    pub layout: bool,
}

/// The flags of the commands that read image files.
#[derive(clap::Args, Clone, Copy, Debug)]
pub struct ImageArgs {
    /// Invert grey levels first (dark digits on white paper; MNIST has light on black). Without
    /// it, a grey image on a mostly light ground is inverted, with a note.
    #[arg(long)]
    invert: bool,
    /// Read images as they are: no inversion unless --invert, and digits not laid out as
    /// MNIST's (by default a digit's ink is scaled into a 20x20 box and centred by its mass in
    /// the 28x28 field, as MNIST's were).
    #[arg(long)]
    raw: bool,
}

impl ImageArgs {
    /// How these flags read an image.
    pub fn preparation(self) -> Preparation {
        Preparation::from_flags(self.invert, self.raw)
    }
}

impl Preparation {
    /// What `--invert` and `--raw` ask for: by default, invert where the ground is light and lay
    /// digits out as MNIST's; `--raw` does neither unless `--invert` asks.
    pub fn from_flags(invert: bool, raw: bool) -> Self {
        Self {
            invert: match (invert, raw) {
                (true, _) => Invert::Always,
                (false, false) => Invert::IfLightGround,
                (false, true) => Invert::Never,
            },
            layout: !raw,
        }
    }
}

/// When grey levels are inverted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invert {
    /// Every image.
    Always,
    /// Images whose border is mostly light: dark ink on paper.
    IfLightGround,
    /// None.
    Never,
}

/// An image ready for the network, and what was done to it on the way.
#[derive(Debug)]
pub struct Prepared {
    /// Channels x side x side bytes, as the dataset stores its images.
    pub item: ImageItem,
    /// Whether the grey levels were inverted because the ground was light.
    pub inverted_light_ground: bool,
    /// Whether the image is one grey level throughout: nothing drawn, so any answer is noise.
    pub blank: bool,
}

impl Prepared {
    /// Says what a reader of `file`'s answer should know: that it was blank, or inverted.
    pub fn say_notes(&self, file: &Path) {
        if self.blank {
            say_err!(
                "note: {}: the image is blank (one grey level), so its answer means nothing",
                file.display()
            );
        }
        if self.inverted_light_ground {
            say_err!(
                "note: {}: inverted: its ground is light (MNIST has light digits on black); \
                 --raw reads it as it is",
                file.display()
            );
        }
    }
}

/// Decodes `file` into an item of `kind`'s layout: channels x side x side bytes, prepared as
/// `preparation` says for a grey dataset.
pub fn read_image(file: &Path, kind: DatasetKind, preparation: Preparation) -> Result<Prepared> {
    let open = || {
        let reader = image::ImageReader::open(file)
            .and_then(|reader| reader.with_guessed_format())
            .with_context(|| format!("cannot read {}", file.display()))?;
        // The content decides, not the name: a PNG named .txt is read, a text named .png is not.
        match reader.format() {
            Some(_) => Ok(reader),
            None => Err(anyhow::anyhow!(
                "{}: not an image: its content is neither PNG nor JPEG",
                file.display()
            )),
        }
    };
    // The decoder's message already ends with its cause: no chain of sources after it.
    let cannot_decode = |e: image::ImageError| {
        anyhow::anyhow!(
            "{}: cannot decode the image (PNG or JPEG expected): {e}",
            file.display()
        )
    };
    // The header alone says the size: a small file may declare a huge image.
    let (width, height) = open()?.into_dimensions().map_err(cannot_decode)?;
    if width as u64 * height as u64 > MAX_IMAGE_PIXELS {
        bail!(
            "{}: the image declares {width} x {height} pixels, more than the {} this reads; \
             scale it down first",
            file.display(),
            crate::output::grouped(MAX_IMAGE_PIXELS)
        );
    }
    let decoded = open()?.decode().map_err(cannot_decode)?;
    Ok(match kind.channels() {
        1 => prepare_grey(decoded.to_luma8(), kind, preparation),
        _ => {
            let item = colour_item(&decoded, kind);
            let blank = item.pixels.iter().all(|&p| p == item.pixels[0]);
            Prepared {
                item,
                inverted_light_ground: false,
                blank,
            }
        }
    })
}

/// A grey image (a file's, or a drawing) as an item of `kind`, prepared as `preparation` says.
pub fn prepare_grey(mut grey: GrayImage, kind: DatasetKind, preparation: Preparation) -> Prepared {
    let first = grey.pixels().next().map_or(0, |p| p.0[0]);
    let blank = grey.pixels().all(|p| p.0[0] == first);
    let light = light_ground(&grey);
    let invert = match preparation.invert {
        Invert::Always => true,
        Invert::IfLightGround => light,
        Invert::Never => false,
    };
    if invert {
        image::imageops::invert(&mut grey);
    }
    let side = kind.image_side() as u32;
    let digits = matches!(kind, DatasetKind::Mnist | DatasetKind::MnistSample);
    let grey = match preparation.layout && digits {
        true => mnist_layout(&grey),
        false => image::imageops::resize(&grey, side, side, FilterType::Triangle),
    };
    Prepared {
        item: ImageItem {
            pixels: grey.into_raw(),
            label: 0,
        },
        inverted_light_ground: invert && preparation.invert == Invert::IfLightGround,
        blank,
    }
}

/// A colour image resized to `kind`'s side, its channels stored one plane after another (as
/// CIFAR-10 stores them).
fn colour_item(image: &DynamicImage, kind: DatasetKind) -> ImageItem {
    let side = kind.image_side() as u32;
    let rgb = image
        .resize_exact(side, side, FilterType::Triangle)
        .to_rgb8();
    let pixels = (0..3)
        .flat_map(|c| rgb.pixels().map(move |p| p.0[c]))
        .collect();
    ImageItem { pixels, label: 0 }
}

/// Whether the outermost rows and columns of `grey` are mostly light (mean above mid-grey): a
/// dark digit on paper, where MNIST has a light one on black.
fn light_ground(grey: &GrayImage) -> bool {
    let (w, h) = grey.dimensions();
    let border = grey
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x + 1 == w || *y + 1 == h)
        .map(|(_, _, p)| u64::from(p.0[0]));
    let (sum, count) = border.fold((0, 0), |(s, n), v| (s + v, n + 1));
    count > 0 && sum > 128 * count
}

/// `grey` (light ink on black) laid out as MNIST's digits: the box around the ink (pixels above
/// a tenth of the brightest) scaled, keeping its aspect ratio, so that its longer side is 20
/// pixels, then placed in a 28 x 28 field with its centre of mass at the field's centre. An
/// image without ink gives an empty field.
pub fn mnist_layout(grey: &GrayImage) -> GrayImage {
    let mut field = GrayImage::new(MNIST_FIELD, MNIST_FIELD);
    let brightest = grey.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if brightest == 0 {
        return field;
    }
    let threshold = (brightest / 10).max(1);
    let inked = grey
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] >= threshold);
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, _) in inked {
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let (w, h) = (x1 - x0 + 1, y1 - y0 + 1);
    let scale = MNIST_BOX as f64 / w.max(h) as f64;
    let size = |n: u32| ((n as f64 * scale).round() as u32).clamp(1, MNIST_BOX);
    let ink = image::imageops::crop_imm(grey, x0, y0, w, h).to_image();
    let digit = image::imageops::resize(&ink, size(w), size(h), FilterType::Triangle);
    // Centre of mass, pixel centres at i + 0.5.
    let (mut mass, mut mx, mut my) = (0f64, 0f64, 0f64);
    for (x, y, p) in digit.enumerate_pixels() {
        let v = f64::from(p.0[0]);
        mass += v;
        mx += v * (x as f64 + 0.5);
        my += v * (y as f64 + 0.5);
    }
    let centre = MNIST_FIELD as f64 / 2.0;
    let offset = |m: f64, extent: u32| match mass > 0.0 {
        true => (centre - m / mass).round() as i64,
        false => ((MNIST_FIELD - extent) / 2) as i64,
    };
    let (ox, oy) = (offset(mx, digit.width()), offset(my, digit.height()));
    image::imageops::overlay(&mut field, &digit, ox, oy);
    field
}

/// `image` as base64 PNG data, for a page to embed (`data:image/png;base64,...`).
pub fn png_data(image: &DynamicImage) -> Result<String> {
    use base64::Engine;
    let mut bytes = Vec::new();
    image.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The image as it is, resized.
    const RAW: Preparation = Preparation {
        invert: Invert::Never,
        layout: false,
    };
    /// Inverted, resized.
    const INVERT: Preparation = Preparation {
        invert: Invert::Always,
        layout: false,
    };

    /// The box around the pixels of `grey` above `threshold`: `[x0, y0, x1, y1]`, inclusive.
    fn ink_box(grey: &GrayImage, threshold: u8) -> [u32; 4] {
        let inked = grey
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0[0] >= threshold);
        inked.fold([u32::MAX, u32::MAX, 0, 0], |[x0, y0, x1, y1], (x, y, _)| {
            [x0.min(x), y0.min(y), x1.max(x), y1.max(y)]
        })
    }

    /// The centre of mass of `grey`, pixel centres at i + 0.5.
    fn centre_of_mass(grey: &GrayImage) -> [f64; 2] {
        let mut sums = [0f64; 3];
        for (x, y, p) in grey.enumerate_pixels() {
            let v = f64::from(p.0[0]);
            sums[0] += v;
            sums[1] += v * (x as f64 + 0.5);
            sums[2] += v * (y as f64 + 0.5);
        }
        [sums[1] / sums[0], sums[2] / sums[0]]
    }

    /// A small digit-like stroke in a corner, and a large one off-centre, both come out as
    /// MNIST's: the longer side of the ink 20 pixels, the centre of mass within half a pixel of
    /// the field's centre, the aspect ratio kept.
    #[test]
    fn a_digit_is_scaled_into_the_box_and_centred_by_its_mass() {
        for (side, [x0, y0, w, h]) in [(28, [1, 2, 4, 8]), (200, [120, 10, 60, 150])] {
            let mut grey = GrayImage::new(side, side);
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    // Heavier at the top, so that the centre of mass is not the box's centre.
                    let v = 255 - (100 * (y - y0) / h) as u8;
                    grey.put_pixel(x, y, image::Luma([v]));
                }
            }
            let laid = mnist_layout(&grey);
            assert_eq!(laid.dimensions(), (28, 28));
            let [bx0, by0, bx1, by1] = ink_box(&laid, 26);
            let (bw, bh) = (bx1 - bx0 + 1, by1 - by0 + 1);
            assert!((19..=21).contains(&bh), "height {bh} ({side})");
            let ratio = bw as f64 / bh as f64;
            let expected = w as f64 / h as f64;
            assert!(
                (ratio - expected).abs() < 0.1,
                "aspect {ratio} vs {expected}"
            );
            let [cx, cy] = centre_of_mass(&laid);
            assert!(
                (cx - 14.0).abs() <= 0.6 && (cy - 14.0).abs() <= 0.6,
                "{cx}, {cy}"
            );
        }
        // No ink: an empty field, said to be blank.
        let empty = mnist_layout(&GrayImage::new(28, 28));
        assert!(empty.pixels().all(|p| p.0[0] == 0));
        let page = GrayImage::from_pixel(40, 40, image::Luma([255]));
        let default = Preparation::from_flags(false, false);
        assert!(prepare_grey(page, DatasetKind::Mnist, default).blank);
    }

    /// A dark digit on a white page is inverted (and said to be), then laid out; a light digit
    /// on black is left as it is; `--raw` does neither, `--invert` always inverts.
    #[test]
    fn a_dark_digit_on_paper_is_inverted_and_laid_out() {
        let mut paper = GrayImage::from_pixel(90, 90, image::Luma([240]));
        for y in 30..70 {
            for x in 40..50 {
                paper.put_pixel(x, y, image::Luma([10]));
            }
        }
        let default = Preparation::from_flags(false, false);
        let read = prepare_grey(paper.clone(), DatasetKind::Mnist, default);
        assert!(read.inverted_light_ground);
        let laid = GrayImage::from_raw(28, 28, read.item.pixels).unwrap();
        let [cx, cy] = centre_of_mass(&laid);
        assert!(
            (cx - 14.0).abs() <= 0.6 && (cy - 14.0).abs() <= 0.6,
            "{cx}, {cy}"
        );
        assert_eq!(laid.get_pixel(0, 0).0[0], 0, "the ground is black");
        let mut night = paper.clone();
        image::imageops::invert(&mut night);
        assert!(!prepare_grey(night, DatasetKind::Mnist, default).inverted_light_ground);
        let raw = prepare_grey(
            paper.clone(),
            DatasetKind::Mnist,
            Preparation::from_flags(false, true),
        );
        assert!(!raw.inverted_light_ground);
        assert!(raw.item.pixels[0] > 200, "left light");
        let forced = prepare_grey(
            paper,
            DatasetKind::Mnist,
            Preparation::from_flags(true, true),
        );
        assert!(!forced.inverted_light_ground, "asked for, so not noted");
        assert!(forced.item.pixels[0] < 50, "inverted");
        // Fashion-MNIST's images are inverted on a light ground but not laid out as digits.
        let shirt = GrayImage::from_pixel(28, 28, image::Luma([250]));
        let read = prepare_grey(shirt, DatasetKind::FashionMnist, default);
        assert!(read.inverted_light_ground && read.item.pixels.iter().all(|&p| p == 5));
    }

    #[test]
    fn images_become_dataset_items_channel_by_channel() {
        let dir = tempfile::tempdir().unwrap();
        // Colour, at CIFAR's size: planes of R, then G, then B.
        let rgb = dir.path().join("rgb.png");
        image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]))
            .save(&rgb)
            .unwrap();
        let item = read_image(&rgb, DatasetKind::Cifar10, RAW).unwrap().item;
        assert_eq!(item.pixels.len(), 3 * 32 * 32);
        for (plane, value) in item.pixels.chunks(32 * 32).zip([10, 20, 30]) {
            assert!(plane.iter().all(|&p| p == value), "{value}");
        }
        // Grey, at MNIST's size, as stored; inverted on request; colour input made grey.
        let grey = dir.path().join("grey.png");
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(&grey)
            .unwrap();
        assert_eq!(
            read_image(&grey, DatasetKind::Mnist, RAW)
                .unwrap()
                .item
                .pixels,
            pixels
        );
        let inverted = read_image(&grey, DatasetKind::Mnist, INVERT)
            .unwrap()
            .item
            .pixels;
        assert!(inverted.iter().zip(&pixels).all(|(a, b)| *a == 255 - b));
        let from_colour = read_image(&rgb, DatasetKind::Mnist, RAW).unwrap().item;
        assert_eq!(from_colour.pixels.len(), 28 * 28);
        // Another size is resampled to the dataset's.
        let big = dir.path().join("big.jpg");
        image::GrayImage::from_pixel(100, 60, image::Luma([200]))
            .save(&big)
            .unwrap();
        let item = read_image(&big, DatasetKind::FashionMnist, RAW)
            .unwrap()
            .item;
        assert_eq!(item.pixels.len(), 28 * 28);
        assert!(item.pixels.iter().all(|&p| p.abs_diff(200) <= 2));
    }

    /// A PNG of `width` x `height` grey pixels that holds its header and no pixels: what a
    /// hostile file declares.
    fn declared_png(width: u32, height: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = !0u32;
            for &byte in bytes {
                crc ^= byte as u32;
                for _ in 0..8 {
                    crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
                }
            }
            !crc
        }
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(width.to_be_bytes());
        ihdr.extend(height.to_be_bytes());
        ihdr.extend([8, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        // The decoder reads up to the first image data: an empty zlib stream.
        let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
        png.extend(8u32.to_be_bytes());
        png.extend(idat);
        png.extend(crc32(idat).to_be_bytes());
        png.extend(0u32.to_be_bytes());
        png.extend(b"IEND");
        png.extend(crc32(b"IEND").to_be_bytes());
        png
    }

    #[test]
    fn an_image_declaring_too_many_pixels_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let huge = dir.path().join("huge.png");
        std::fs::write(&huge, declared_png(20_000, 20_000)).unwrap();
        let err = format!(
            "{:#}",
            read_image(&huge, DatasetKind::Mnist, RAW).unwrap_err()
        );
        assert!(
            err.contains("huge.png") && err.contains("20000 x 20000"),
            "{err}"
        );
        // Within the limit, the same header reaches the decoder, which finds no pixel data.
        std::fs::write(&huge, declared_png(28, 28)).unwrap();
        let err = format!(
            "{:#}",
            read_image(&huge, DatasetKind::Mnist, RAW).unwrap_err()
        );
        assert!(err.contains("cannot decode"), "{err}");
    }
}
