//! GPU against CPU, bit for bit (feature `cuda`). Without a GPU the kernels are still compiled with NVRTC
//! (which needs no device), and every GPU test says it was skipped and why.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use repops::op::{HostData, HostTensor};
use repops::simd::SimdLevel;
use repops::{execute, tensor};

fn gpu() -> Option<Device> {
    match repops::cuda_device(0) {
        Ok(d) => Some(d),
        Err(e) => {
            println!("SKIPPED (no GPU): {e}");
            None
        }
    }
}

fn to_device(t: &HostTensor, dev: &Device) -> candle_core::Result<Tensor> {
    match &t.data {
        HostData::F32(v) => Tensor::from_vec(v.clone(), t.shape.as_slice(), dev),
        HostData::U32(v) => Tensor::from_vec(v.clone(), t.shape.as_slice(), dev),
    }
}

#[test]
fn kernels_compile_with_nvrtc() {
    let src = repops::cuda::source();
    assert!(src.contains("#define EXP_POLY_0"), "constants are generated");
    let opts = candle_core::cuda_backend::cudarc::nvrtc::CompileOptions {
        fmad: Some(false),
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        ..Default::default()
    };
    match candle_core::cuda_backend::cudarc::nvrtc::compile_ptx_with_opts(src, opts) {
        Ok(ptx) => assert!(ptx.to_src().contains("rp_matmul")),
        Err(e) => panic!("repops CUDA kernels do not compile: {e}"),
    }
}

#[test]
fn every_op_matches_the_cpu_bit_for_bit() -> repops::Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    for (op, inputs) in common::cases() {
        let views: Vec<_> = inputs.iter().map(HostTensor::view).collect();
        let want = execute(&op, &views, SimdLevel::Scalar)?;
        let on_gpu: Vec<Tensor> = inputs.iter().map(|t| to_device(t, &dev)).collect::<candle_core::Result<_>>()?;
        let refs: Vec<&Tensor> = on_gpu.iter().collect();
        let got = tensor::to_host(&tensor::apply_op(op, &refs)?.to_device(&Device::Cpu)?)?;
        assert_eq!(got.shape, want.shape, "{op:?}");
        let (HostData::F32(g), HostData::F32(w)) = (&got.data, &want.data) else { panic!("f32 outputs") };
        let diff = g.iter().zip(w).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(diff, 0, "{op:?}: {diff} of {} elements differ between GPU and CPU", g.len());
    }
    Ok(())
}

#[test]
fn bad_ids_on_the_gpu_are_typed_errors() -> repops::Result<()> {
    let Some(dev) = gpu() else { return Ok(()) };
    let table = Tensor::zeros((4, 3), candle_core::DType::F32, &dev)?;
    let ids = Tensor::from_vec(vec![1u32, 9], 2, &dev)?;
    assert!(matches!(tensor::embedding(&table, &ids), Err(repops::Error::Candle(_) | repops::Error::Index { .. })));
    Ok(())
}
