//! A plain dense f32 tensor: a shape and row-major data. Executors use it with the batch as the
//! first axis; everything else in qvit describes tensors per image.

use serde::{Deserialize, Serialize};

/// Row-major f32 data with its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of the given shape; panics if the data length does not match (a programming
    /// error, never user input).
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor shape {shape:?} does not match {} values",
            data.len()
        );
        Self { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Self {
            shape,
            data: vec![0.0; n],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of the first axis (the batch, for executor tensors).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per item of the first axis.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The `i`-th item along the first axis.
    pub fn item(&self, i: usize) -> &[f32] {
        let n = self.item_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// The shape and numbers borrowed as a [`TensorMut`].
    pub fn view_mut(&mut self) -> TensorMut<'_> {
        TensorMut {
            shape: &self.shape,
            data: &mut self.data,
        }
    }
}

/// A batch's shape and numbers borrowed, to read or to rewrite in place: what the float
/// executor hands the transforms and observers it calls with each node's output (it keeps its
/// values in buffers that are not `Tensor`s, see `exec::float`).
#[derive(Debug)]
pub struct TensorMut<'a> {
    pub shape: &'a [usize],
    pub data: &'a mut [f32],
}

impl TensorMut<'_> {
    /// Size of the first axis (the batch).
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per item of the first axis.
    pub fn item_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// An owned copy.
    pub fn to_tensor(&self) -> Tensor {
        Tensor::new(self.shape.to_vec(), self.data.to_vec())
    }
}
