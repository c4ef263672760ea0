//! The quantize pass: Linear weights to FP8, INT8 or INT4 in the compressed-tensors layout,
//! tensor by tensor, memory near one tensor; the calibrated methods (AWQ, GPTQ, SmoothQuant)
//! decide their per-tensor rewrites beforehand, one layer at a time.

pub mod awq;
mod capture;
pub mod gptq;
pub mod int4;
mod mse;
mod plan;
pub mod rewrite;
mod run;
pub mod smoothquant;
pub mod tensor;

pub use plan::{Action, QuantizePlan};
pub use run::{run_quantize, QuantizeReport};

use super::{Pass, PassContext, PassOutput};
use crate::progress::Event;
use crate::{Error, Result};
use std::path::Path;
use temper_core::manifest::PassRecord;
use temper_core::writer::ShardedWriter;
use temper_core::IoContext;

/// The planned pass, and what calibration added to it.
pub struct QuantizePass {
    pub plan: QuantizePlan,
    pub max_shard_bytes: u64,
    /// Static FP8 and AWQ: what calibration ran (for the manifest).
    pub calibration: Option<serde_json::Value>,
}

impl Pass for QuantizePass {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn run(&mut self, input: &Path, out: &Path, ctx: &mut PassContext) -> Result<PassOutput> {
        let plan = &self.plan;
        if input != plan.checkpoint.dir {
            return Err(Error::Plan(format!(
                "the quantize pass reads the source model {}, not {}; list quantization before \
                 the other optimizations",
                plan.checkpoint.dir.display(),
                input.display()
            )));
        }
        let writer = ShardedWriter::create(out, &plan.outputs, self.max_shard_bytes)?;
        (ctx.sink)(Event::Phase("quantize"));
        let report = run_quantize(plan, &writer, ctx.device, ctx.sink, ctx.cancel)?;
        let mut files = writer.finish()?;
        files.push(write_config(plan, out)?);
        let summary = serde_json::json!({
            "scheme": report.scheme,
            "format": report.format,
            "isa": report.isa,
            "device": report.device,
            "tensors_quantized": report.tensors_quantized,
            "tensors_copied": report.tensors_copied,
            "input_bytes": report.input_bytes,
            "output_bytes": report.output_bytes,
            "seconds": report.seconds,
            "mean_relative_rms_error": report.mean_relative_rms_error,
            "worst_relative_rms_error": report.worst_relative_rms_error,
            "worst_tensor": report.worst_tensor,
        });
        let record = PassRecord {
            name: "quantize".into(),
            options: serde_json::json!({
                "scheme": plan.options.scheme,
                "ignore": plan.ignore,
                "requested_ignore": plan.options.ignore,
                "scale_dtype": plan.scale_dtype.to_string(),
                "max_shard_bytes": self.max_shard_bytes,
                "calibration": self.calibration,
            }),
            report: serde_json::to_value(&report).expect("report serialises"),
        };
        Ok(PassOutput {
            files,
            record,
            summary,
        })
    }
}

/// The source `config.json` with the `quantization_config` added.
fn write_config(plan: &QuantizePlan, dest: &Path) -> Result<String> {
    let mut raw = plan.checkpoint.config.raw.clone();
    raw.insert("quantization_config".into(), plan.quantization_config());
    let path = dest.join("config.json");
    let text =
        serde_json::to_string_pretty(&serde_json::Value::Object(raw)).expect("config serialises");
    std::fs::write(&path, text + "\n").at(&path)?;
    Ok("config.json".into())
}
