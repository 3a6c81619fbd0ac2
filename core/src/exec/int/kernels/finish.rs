//! What the products' tiles (`vnni`, `avx2`) do with each row's sums before they store them:
//! one generic tile serves the plain product and the ones that requantize in registers
//! (`gemm_rows_requantized`).
#![allow(unsafe_code)]

/// What a product's tile stores of each row's sums in a block of columns (16 in a VNNI
/// panel, `V` = `__m512i`; 8 in an AVX2 half panel, `__m256i`): the sums themselves
/// ([`Sums`]), or their requantization (`columns::Requantize`, `columns::LookedUp`).
pub(super) trait Finish<V> {
    /// Whether the last columns may run as dot products, which store sums.
    const DOTS: bool;
    /// What a block of columns needs, loaded once per tile.
    type Block: Copy;
    /// # Safety
    /// The CPU runs `V`'s instructions; `col` is a block's first column.
    unsafe fn block(&self, col: usize) -> Self::Block;
    /// What row `r`'s sums start from (counted from the first row of the output): a token's
    /// offset, which the sums then carry into `finish` at no cost (added after, it had been
    /// one of the requantization's instructions per vector). Sums wrap in i32, so where they
    /// start changes nothing else.
    #[inline(always)]
    fn initial(&self, _r: usize) -> i32 {
        0
    }
    /// The values stored for the sums of row `r` (counted from the first row of the output).
    ///
    /// # Safety
    /// The CPU runs `V`'s instructions; `r` is a row of the output.
    unsafe fn finish(&self, block: &Self::Block, r: usize, sums: V) -> V;
}

/// The sums themselves.
pub(super) struct Sums;

impl<V> Finish<V> for Sums {
    const DOTS: bool = true;
    type Block = ();
    #[inline(always)]
    unsafe fn block(&self, _: usize) {}
    #[inline(always)]
    unsafe fn finish(&self, _: &(), _: usize, sums: V) -> V {
        sums
    }
}
