//! A dataset in memory: images as bytes and their labels.

/// Images stored as bytes, `count` x `channels` x `rows` x `cols`, row-major.
#[derive(Clone, Debug)]
pub struct Images {
    /// The pixels, one byte each.
    pub pixels: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Channels per image.
    pub channels: usize,
    /// Height.
    pub rows: usize,
    /// Width.
    pub cols: usize,
}

/// A dataset's training and test splits, read and verified.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training images.
    pub train_images: Images,
    /// Training labels.
    pub train_labels: Vec<u8>,
    /// Test images.
    pub test_images: Images,
    /// Test labels.
    pub test_labels: Vec<u8>,
}
