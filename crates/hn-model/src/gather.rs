//! The region graph's neighbour gather, with our own CPU kernels on burn's `flex` backend.
//!
//! [`GraphGather`] is a burn backend extension, as [`crate::conv`] is: on `flex` the gather of
//! `[B, N, C]` rows by a neighbour table and its backward (a scatter-add) are ours, tied into
//! autodiff by a hand-written `Backward`; on every other backend [`gather_nodes`] is burn's own
//! `select`. Written by hand because flex's `select` backward runs its scatter-add serially on
//! the calling thread, element by element; here each study is one rayon job adding whole
//! contiguous feature rows, in a fixed order (so gradients do not depend on scheduling).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Flex, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::{DType, IndexingUpdateOp, Shape};
use rayon::prelude::*;

/// Gather along dimension 1 and its adjoint.
#[backend_extension(Flex, Autodiff)]
pub trait GraphGather: Backend {
    /// `x: [B, N, C]`, `index: [M]` (each `< N`) → `[B, M, C]` with row `m` = `x[:, index[m]]`.
    fn graph_gather(x: FloatTensor<Self>, index: IntTensor<Self>) -> FloatTensor<Self>;
    /// The gradient with respect to `x` (`[B, nodes, C]`) of [`Self::graph_gather`], from the
    /// output's gradient `grad: [B, M, C]`.
    fn graph_gather_backward(
        grad: FloatTensor<Self>,
        index: IntTensor<Self>,
        nodes: usize,
    ) -> FloatTensor<Self>;
}

type FlexTensor = FloatTensor<Flex>;

/// The index as `usize`s, each checked `< nodes`; `None` for other dtypes or an index out of
/// range (then flex's own kernels run, and report it).
fn index_of(index: &FlexTensor, nodes: usize) -> Option<Vec<usize>> {
    let t = index.to_contiguous();
    let v: Vec<usize> = match t.dtype() {
        DType::I64 => t
            .as_slice::<i64>()?
            .iter()
            .map(|&i| usize::try_from(i).ok())
            .collect::<Option<_>>()?,
        DType::I32 => t
            .as_slice::<i32>()?
            .iter()
            .map(|&i| usize::try_from(i).ok())
            .collect::<Option<_>>()?,
        _ => return None,
    };
    v.iter().all(|&i| i < nodes).then_some(v)
}

/// `y[b, m, :] = x[b, index[m], :]`.
fn gather<T: Copy + Default + Send + Sync>(
    x: &[T],
    [_, n, c]: [usize; 3],
    index: &[usize],
) -> Vec<T> {
    let m = index.len();
    let mut y = vec![T::default(); x.len() / n.max(1) * m];
    if c == 0 {
        return y;
    }
    y.par_chunks_mut(m * c)
        .zip(x.par_chunks(n * c))
        .for_each(|(yb, xb)| {
            for (row, &i) in yb.chunks_exact_mut(c).zip(index) {
                row.copy_from_slice(&xb[i * c..(i + 1) * c]);
            }
        });
    y
}

/// `dx[b, index[m], :] += dy[b, m, :]` over `m` in order, `dx: [B, n, C]` from zero.
fn scatter_add<T: Copy + Default + std::ops::AddAssign + Send + Sync>(
    dy: &[T],
    [_, m, c]: [usize; 3],
    index: &[usize],
    n: usize,
) -> Vec<T> {
    let mut dx = vec![T::default(); dy.len() / m.max(1) * n];
    if c == 0 || m == 0 {
        return dx;
    }
    dx.par_chunks_mut(n * c)
        .zip(dy.par_chunks(m * c))
        .for_each(|(dxb, dyb)| {
            for (row, &i) in dyb.chunks_exact(c).zip(index) {
                for (d, s) in dxb[i * c..(i + 1) * c].iter_mut().zip(row) {
                    *d += *s;
                }
            }
        });
    dx
}

/// Run `f32`/`f64` kernel `k` on the contiguous 3-D `t`; `None` for other ranks or dtypes.
fn run3(
    t: &FlexTensor,
    out_dims: impl Fn([usize; 3]) -> [usize; 3],
    k32: impl Fn(&[f32], [usize; 3]) -> Vec<f32>,
    k64: impl Fn(&[f64], [usize; 3]) -> Vec<f64>,
) -> Option<FlexTensor> {
    if t.layout().shape().len() != 3 {
        return None;
    }
    let dims = t.layout().shape().dims::<3>();
    let out = out_dims(dims);
    let t = t.to_contiguous();
    let data = match t.dtype() {
        DType::F32 => TensorData::new(k32(t.as_slice::<f32>()?, dims), out),
        DType::F64 => TensorData::new(k64(t.as_slice::<f64>()?, dims), out),
        _ => return None,
    };
    Some(FlexTensor::from_data(data))
}

impl GraphGather for Flex {
    fn graph_gather(x: FlexTensor, index: FlexTensor) -> FlexTensor {
        let fast = || {
            let nodes = *x.layout().shape().get(1)?;
            let idx = index_of(&index, nodes)?;
            let m = idx.len();
            run3(
                &x,
                |[b, _, c]| [b, m, c],
                |v, d| gather(v, d, &idx),
                |v, d| gather(v, d, &idx),
            )
        };
        fast().unwrap_or_else(|| Flex::float_select(x, 1, index))
    }

    fn graph_gather_backward(grad: FlexTensor, index: FlexTensor, nodes: usize) -> FlexTensor {
        let fast = || {
            let idx = index_of(&index, nodes)?;
            if grad.layout().shape().get(1) != Some(&idx.len()) {
                return None;
            }
            run3(
                &grad,
                |[b, _, c]| [b, nodes, c],
                |v, d| scatter_add(v, d, &idx, nodes),
                |v, d| scatter_add(v, d, &idx, nodes),
            )
        };
        fast().unwrap_or_else(|| select_add_reference::<Flex>(grad, index, nodes))
    }
}

/// burn's own adjoint of `select(1, index)`: zeros of `[B, nodes, C]` with `grad` added at
/// `index`.
fn select_add_reference<B: Backend>(
    grad: FloatTensor<B>,
    index: IntTensor<B>,
    nodes: usize,
) -> FloatTensor<B> {
    let shape = grad.shape();
    let mut dims: Vec<usize> = (0..shape.num_dims()).map(|i| shape[i]).collect();
    dims[1] = nodes;
    let zeros = B::float_zeros(Shape::from(dims), &grad.device(), grad.dtype().into());
    B::float_select_assign(zeros, 1, index, grad, IndexingUpdateOp::Add)
}

#[derive(Debug)]
struct GraphGatherBackward;

impl<B: Backend + GraphGather> Backward<B, 1> for GraphGatherBackward {
    type State = (IntTensor<B>, usize);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (index, nodes) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::graph_gather_backward(grad, index, nodes));
        }
    }
}

impl<B: Backend + GraphGather, C: CheckpointStrategy> GraphGather for Autodiff<B, C> {
    fn graph_gather(x: FloatTensor<Self>, index: IntTensor<Self>) -> FloatTensor<Self> {
        let shape = x.primitive().shape();
        let nodes = if shape.num_dims() > 1 { shape[1] } else { 0 };
        match GraphGatherBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::graph_gather(x.primitive().clone(), index.clone());
                prep.finish((index, nodes), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::graph_gather(x.into_primitive(), index)),
        }
    }

    // Gradients of gradients are not needed by this network; this runs untracked.
    fn graph_gather_backward(
        grad: FloatTensor<Self>,
        index: IntTensor<Self>,
        nodes: usize,
    ) -> FloatTensor<Self> {
        select_add_reference::<Self>(grad, index, nodes)
    }
}

/// `x.select(1, index)` for `x: [B, N, C]`, on our kernels where `x` is on flex and they are
/// on ([`crate::conv::set_fast_kernels`]).
pub fn gather_nodes(x: Tensor<3>, index: Tensor<1, Int>) -> Tensor<3> {
    if !crate::conv::fast_kernels_on() || x.device().inner() != Device::flex() {
        return x.select(1, index);
    }
    Tensor::<3>::from_dispatch(<burn::backend::Dispatch as GraphGather>::graph_gather(
        x.into_dispatch(),
        index.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// Ours against flex's `select` through autodiff: output and input gradient, with repeated
    /// and unused nodes in the index, batch 1, and more studies than threads.
    #[test]
    fn gather_equals_select_forward_and_backward() {
        let device = Device::flex().autodiff();
        device.seed(5);
        for (b, n, c, index) in [
            (1usize, 5usize, 3usize, vec![0i64, 4, 4, 2, 0, 0, 1]),
            (7, 9, 8, vec![8, 0, 3, 3, 3, 7, 1, 2, 5, 6, 4, 0]),
            (3, 4, 1, vec![1, 1, 1]),
        ] {
            let normal = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<3>::random([b, n, c], normal, &device).require_grad();
            let idx =
                Tensor::<1, Int>::from_data(TensorData::new(index.clone(), [index.len()]), &device);
            let reference = x.clone().select(1, idx.clone());
            let ours = gather_nodes(x.clone(), idx);
            assert_eq!(ours.dims(), reference.dims());
            let r = Tensor::<3>::random(reference.dims(), normal, &device);
            let ga = (reference.clone() * r.clone()).sum().backward();
            let gb = (ours.clone() * r).sum().backward();
            let d = (ours - reference).abs().max().into_scalar::<f32>();
            assert_eq!(d, 0.0, "b={b}: output");
            let (xa, xb) = (x.grad(&ga).unwrap(), x.grad(&gb).unwrap());
            let d = (xb - xa.clone()).abs().max().into_scalar::<f32>();
            assert!(
                d <= 1e-6 * xa.abs().max().into_scalar::<f32>().max(1.0),
                "b={b}: grad"
            );
        }
    }
}
