//! The GPU side, through cudarc (dynamic loading: libcuda is opened at run time, never
//! linked).

use crate::device::{GpuInfo, GpuMatrix};
use crate::error::CudaError;
use crate::quant::{QuantLayout, Quantized};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;
use temper_kernels::{ScaleDtype, Src};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Most scale groups per row `tq_quantize_rows` holds in shared memory (TQ_MAX_GROUPS).
const MAX_GROUPS: usize = 1024;
/// Rows of a decode product handled by the warp-per-row kernel (TQ_GEMV_MAX_M).
const GEMV_MAX_M: usize = 8;

pub(crate) struct Loaded {
    pub(crate) info: GpuInfo,
    stream: Arc<CudaStream>,
    quantize: Arc<CudaModule>,
    matmul: Arc<CudaModule>,
}

fn driver(what: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> CudaError {
    let what = what.into();
    move |e| CudaError::Driver {
        what,
        detail: e.to_string(),
    }
}

impl Loaded {
    fn open(ordinal: usize) -> Result<Loaded, CudaError> {
        // SAFETY: only tries to dlopen libcuda by its usual names; no CUDA call is made.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::NoDriver);
        }
        let count = CudaContext::device_count().map_err(driver("to count devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal,
                count: count.max(0) as usize,
                hint: if count > 0 {
                    ": use --device cuda:0 (the first), or check CUDA_VISIBLE_DEVICES"
                } else {
                    ": use --device cpu"
                },
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver(format!("to open device {ordinal}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("to read the compute capability"))?;
        let cc = (major * 10 + minor) as u32;
        let mut version = 0i32;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }
            .result()
            .map_err(driver("to report its version"))?;
        let info = GpuInfo {
            ordinal,
            name: ctx.name().map_err(driver("to name the device"))?,
            compute_capability: cc,
            memory_bytes: ctx.total_mem().map_err(driver("to report memory"))? as u64,
            driver_version: version as u32,
        };
        let load = |ptx: &str, cubins: &[(u32, &[u8])], name: &str| {
            // The cubin built for this architecture, else the PTX for the driver to compile.
            let image = match cubins.iter().find(|(a, _)| *a == cc) {
                Some((_, bin)) => Ptx::from_binary(bin.to_vec()),
                None => Ptx::from_src(ptx),
            };
            ctx.load_module(image).map_err(|e| CudaError::Driver {
                what: format!(
                    "to load temper's {name} kernels on {} (sm_{cc}, driver {}.{})",
                    info.name,
                    version / 1000,
                    version % 1000 / 10
                ),
                detail: format!(
                    "{e}; they are built with CUDA 13, which needs driver 580 or newer"
                ),
            })
        };
        let quantize = load(
            embedded::QUANTIZE_PTX,
            embedded::QUANTIZE_CUBINS,
            "quantize",
        )?;
        let matmul = load(embedded::MATMUL_PTX, embedded::MATMUL_CUBINS, "matmul")?;
        Ok(Loaded {
            info,
            stream: ctx.default_stream(),
            quantize,
            matmul,
        })
    }

    fn function(&self, module: &Arc<CudaModule>, name: &str) -> Result<CudaFunction, CudaError> {
        module
            .load_function(name)
            .map_err(driver(format!("to find kernel {name}")))
    }

    fn upload<T: cudarc::driver::DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .clone_htod(host)
            .map_err(driver("to copy to the device"))
    }

    fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .alloc_zeros(n.max(1))
            .map_err(driver("to allocate device memory"))
    }

    fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
        n: usize,
    ) -> Result<Vec<T>, CudaError> {
        let mut v = self
            .stream
            .clone_dtoh(dev)
            .map_err(driver("to copy from the device"))?;
        v.truncate(n);
        Ok(v)
    }
}

/// Source bytes and the kernels' dtype code (TQ_SRC_*).
fn src_bytes<'a>(src: Src<'a>) -> (&'a [u8], i32) {
    match src {
        Src::F32(s) => (bytemuck_cast(s), 0),
        Src::F16(s) => (bytemuck_cast(s), 1),
        Src::Bf16(s) => (bytemuck_cast(s), 2),
    }
}

fn bytemuck_cast<T: Copy>(s: &[T]) -> &[u8] {
    // SAFETY: f32, f16 and bf16 are plain bit patterns with no padding; the byte view
    // covers exactly the slice's memory and lives as long as it.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), std::mem::size_of_val(s)) }
}

fn scale_code(d: ScaleDtype) -> i32 {
    match d {
        ScaleDtype::F32 => 0,
        ScaleDtype::F16 => 1,
        ScaleDtype::Bf16 => 2,
    }
}

fn u32_of(what: &str, v: usize) -> Result<u32, CudaError> {
    u32::try_from(v).map_err(|_| CudaError::Shape(format!("{what} {v} exceeds 2^32")))
}

impl crate::device::Gpu {
    /// Opens CUDA device `ordinal` and loads temper's kernels onto it.
    pub fn open(ordinal: usize) -> Result<crate::device::Gpu, CudaError> {
        Ok(crate::device::Gpu {
            inner: Arc::new(Loaded::open(ordinal)?),
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.inner.info
    }

    /// Quantizes a row-major `[rows, cols]` weight to FP8 E4M3 (`fp8`) or INT8 codes with
    /// `layout`'s scales, exactly as the CPU quantizers do.
    pub fn quantize(
        &self,
        src: Src,
        rows: usize,
        cols: usize,
        fp8: bool,
        layout: QuantLayout,
        scale_dtype: ScaleDtype,
    ) -> Result<Quantized, CudaError> {
        let g = &*self.inner;
        let n = rows
            .checked_mul(cols)
            .filter(|&n| n == src.len())
            .ok_or_else(|| {
                CudaError::Shape(format!(
                    "{} source elements for a {rows}x{cols} weight",
                    src.len()
                ))
            })?;
        if n == 0 {
            return Err(CudaError::Shape(format!("empty weight {rows}x{cols}")));
        }
        let (bytes, src_dtype) = src_bytes(src);
        let d_src = g.upload(bytes)?;
        let mut d_codes = g.zeros::<u8>(n)?;
        let mut first_bad = g.upload(&[u64::MAX])?;
        let mut zero_groups = g.zeros::<u32>(1)?;
        let sd = scale_code(scale_dtype);
        let scales_len;
        let mut d_scales;
        match layout {
            QuantLayout::Rows { group } => {
                if group == 0 || !cols.is_multiple_of(group) || cols / group > MAX_GROUPS {
                    return Err(CudaError::Shape(format!(
                        "group {group} must divide {cols} columns into at most {MAX_GROUPS} groups"
                    )));
                }
                scales_len = rows * (cols / group);
                d_scales = g.zeros::<f32>(scales_len)?;
                let f = g.function(&g.quantize, "tq_quantize_rows")?;
                let (cols32, group32) = (u32_of("cols", cols)?, u32_of("group", group)?);
                let (to_fp8, qmax) = if fp8 { (1i32, 448.0f32) } else { (0, 127.0) };
                let mut b = g.stream.launch_builder(&f);
                b.arg(&d_src)
                    .arg(&src_dtype)
                    .arg(&cols32)
                    .arg(&group32)
                    .arg(&to_fp8);
                b.arg(&qmax).arg(&sd).arg(&mut d_codes).arg(&mut d_scales);
                b.arg(&mut first_bad).arg(&mut zero_groups);
                let cfg = LaunchConfig {
                    grid_dim: (u32_of("rows", rows)?, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: the argument list matches tq_quantize_rows's signature; every
                // buffer holds what the grid touches (rows x cols codes, rows x groups
                // scales, one counter each).
                unsafe { b.launch(cfg) }.map_err(driver("to run tq_quantize_rows"))?;
            }
            QuantLayout::Blocks { rows: br, cols: bc } => {
                if !fp8 || br == 0 || bc == 0 {
                    return Err(CudaError::Shape(format!(
                        "block scales are FP8 only, with a non-empty block (got {br}x{bc})"
                    )));
                }
                let (gy, gx) = (rows.div_ceil(br), cols.div_ceil(bc));
                scales_len = gy * gx;
                d_scales = g.zeros::<f32>(scales_len)?;
                let f = g.function(&g.quantize, "tq_quantize_fp8_blocks")?;
                let (r32, c32) = (u32_of("rows", rows)?, u32_of("cols", cols)?);
                let (br32, bc32) = (u32_of("block rows", br)?, u32_of("block cols", bc)?);
                let mut b = g.stream.launch_builder(&f);
                b.arg(&d_src)
                    .arg(&src_dtype)
                    .arg(&r32)
                    .arg(&c32)
                    .arg(&br32)
                    .arg(&bc32);
                b.arg(&sd).arg(&mut d_codes).arg(&mut d_scales);
                b.arg(&mut first_bad).arg(&mut zero_groups);
                let cfg = LaunchConfig {
                    grid_dim: (u32_of("block columns", gx)?, u32_of("block rows", gy)?, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: arguments match tq_quantize_fp8_blocks; the grid covers exactly
                // the gy x gx tiles the scales buffer holds, tiles clipped to rows x cols.
                unsafe { b.launch(cfg) }.map_err(driver("to run tq_quantize_fp8_blocks"))?;
            }
            QuantLayout::Tensor => {
                if !fp8 {
                    return Err(CudaError::Shape("per-tensor scales are FP8 only".into()));
                }
                scales_len = 1;
                d_scales = g.zeros::<f32>(1)?;
                let mut absmax = g.zeros::<u32>(1)?;
                let n64 = n as u64;
                let blocks = (n.div_ceil(256)).min(4096) as u32;
                let cfg = LaunchConfig {
                    grid_dim: (blocks, 1, 1),
                    block_dim: (256, 1, 1),
                    shared_mem_bytes: 0,
                };
                let f = g.function(&g.quantize, "tq_absmax_bits")?;
                let mut b = g.stream.launch_builder(&f);
                b.arg(&d_src)
                    .arg(&src_dtype)
                    .arg(&n64)
                    .arg(&mut absmax)
                    .arg(&mut first_bad);
                // SAFETY: arguments match tq_absmax_bits; the grid-stride loop stays below n.
                unsafe { b.launch(cfg) }.map_err(driver("to run tq_absmax_bits"))?;
                let f = g.function(&g.quantize, "tq_quantize_fp8_tensor")?;
                let mut b = g.stream.launch_builder(&f);
                b.arg(&d_src)
                    .arg(&src_dtype)
                    .arg(&n64)
                    .arg(&absmax)
                    .arg(&sd);
                b.arg(&mut d_codes).arg(&mut d_scales).arg(&mut zero_groups);
                // SAFETY: arguments match tq_quantize_fp8_tensor; one scale, n codes.
                unsafe { b.launch(cfg) }.map_err(driver("to run tq_quantize_fp8_tensor"))?;
            }
        }
        let bad = g.download(&first_bad, 1)?[0];
        if bad != u64::MAX {
            let i = bad as usize;
            return Err(CudaError::NonFinite {
                row: i / cols,
                col: i % cols,
                value: src.get(i),
            });
        }
        Ok(Quantized {
            codes: g.download(&d_codes, n)?,
            scales: g.download(&d_scales, scales_len)?,
            zero_groups: g.download(&zero_groups, 1)?[0] as usize,
        })
    }

    /// Copies one Linear's codes and scales (`[rows, cols / group]`) to the GPU.
    pub fn upload_matrix(
        &self,
        codes: &[u8],
        scales: &[f32],
        fp8: bool,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<GpuMatrix, CudaError> {
        if group == 0
            || !cols.is_multiple_of(group)
            || codes.len() != rows * cols
            || scales.len() != rows * (cols / group)
        {
            return Err(CudaError::Shape(format!(
                "{} codes and {} scales for {rows}x{cols} in groups of {group}",
                codes.len(),
                scales.len()
            )));
        }
        u32_of("rows", rows)?;
        u32_of("cols", cols)?;
        let g = &*self.inner;
        Ok(GpuMatrix {
            rows,
            cols,
            group,
            fp8,
            codes: g.upload(codes)?,
            scales: g.upload(scales)?,
        })
    }

    /// `y = x W^T` for `m` rows of `x` (`m x cols`, f32), dequantization fused; `m x rows`.
    pub fn weight_only_matmul(
        &self,
        w: &GpuMatrix,
        x: &[f32],
        m: usize,
    ) -> Result<Vec<f32>, CudaError> {
        if x.len() != m * w.cols {
            return Err(CudaError::Shape(format!(
                "x has {} elements, expected {m}x{}",
                x.len(),
                w.cols
            )));
        }
        if m == 0 {
            return Ok(Vec::new());
        }
        let g = &*self.inner;
        let d_x = g.upload(x)?;
        let mut d_y = g.zeros::<f32>(m * w.rows)?;
        let (fp8, rows, cols, group, m32) = (
            i32::from(w.fp8),
            w.rows as u32,
            w.cols as u32,
            w.group as u32,
            u32_of("m", m)?,
        );
        let (name, cfg) = if m <= GEMV_MAX_M {
            // One warp per output row, 8 warps per block.
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(8), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            ("tq_wo_gemv", cfg)
        } else {
            let cfg = LaunchConfig {
                grid_dim: (rows.div_ceil(64), m32.div_ceil(64), 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            ("tq_wo_gemm", cfg)
        };
        let f = g.function(&g.matmul, name)?;
        let mut b = g.stream.launch_builder(&f);
        b.arg(&w.codes)
            .arg(&w.scales)
            .arg(&fp8)
            .arg(&rows)
            .arg(&cols)
            .arg(&group);
        b.arg(&d_x).arg(&m32).arg(&mut d_y);
        // SAFETY: arguments match tq_wo_gemv / tq_wo_gemm; the matrix was checked at upload,
        // x is m x cols and y m x rows, and both kernels bound every index by them.
        unsafe { b.launch(cfg) }.map_err(driver(format!("to run {name}")))?;
        g.download(&d_y, m * w.rows)
    }
}
