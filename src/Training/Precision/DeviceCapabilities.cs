using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using TorchSharp;
using static TorchSharp.torch;

namespace Federated.Training.Precision;

/// <summary>What a device's matrix units can do natively, detected at run time (never assumed from the build).</summary>
/// <param name="NativeBf16Matmul">bf16 matmul runs on bf16 hardware (AVX512-BF16 or AMX-BF16; CUDA compute capability 8.0+).</param>
/// <param name="NativeFp16Matmul">fp16 matmul runs on fp16 hardware (AVX512-FP16 or AMX-FP16; CUDA compute capability 7.0+).</param>
/// <param name="Description">What was detected, for logs and error messages (e.g. "CPU with avx512_bf16").</param>
public sealed record DeviceCapabilities(bool NativeBf16Matmul, bool NativeFp16Matmul, string Description)
{
    /// <summary>Detects the capabilities of <paramref name="device"/> (the CPU's features, or the GPU's compute capability).</summary>
    public static DeviceCapabilities Detect(Device device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return device.type switch
        {
            DeviceType.CPU => DetectCpu(),
            DeviceType.CUDA => DetectCuda(device.index < 0 ? 0 : device.index),
            _ => new DeviceCapabilities(false, false, $"{device.type} device"),
        };
    }

    private static DeviceCapabilities DetectCpu()
    {
        // Avx512F.IsSupported is true only when the OS also saves the AVX-512 state, which oneDNN's bf16 kernels need.
        if (!X86Base.IsSupported || !Avx512F.IsSupported)
        {
            return new DeviceCapabilities(false, false, $"{RuntimeInformation.ProcessArchitecture} CPU without AVX-512 bf16 or fp16");
        }
        // Intel SDM vol. 2A, CPUID leaf 7: sub-leaf 0 EDX bit 22 AMX-BF16, bit 23 AVX512-FP16; sub-leaf 1 EAX bit 5 AVX512-BF16, bit 21 AMX-FP16.
        var (maxSubLeaf, _, _, edx0) = X86Base.CpuId(7, 0);
        int eax1 = maxSubLeaf >= 1 ? X86Base.CpuId(7, 1).Eax : 0;
        bool amxBf16 = (edx0 & (1 << 22)) != 0;
        bool avx512Fp16 = (edx0 & (1 << 23)) != 0;
        bool avx512Bf16 = (eax1 & (1 << 5)) != 0;
        bool amxFp16 = (eax1 & (1 << 21)) != 0;
        var flags = new List<string>();
        if (avx512Bf16)
        {
            flags.Add("avx512_bf16");
        }
        if (amxBf16)
        {
            flags.Add("amx_bf16");
        }
        if (avx512Fp16)
        {
            flags.Add("avx512_fp16");
        }
        if (amxFp16)
        {
            flags.Add("amx_fp16");
        }
        string description = flags.Count == 0 ? "x86-64 CPU with AVX-512 but no bf16 or fp16 units" : $"x86-64 CPU with {string.Join(", ", flags)}";
        return new DeviceCapabilities(avx512Bf16 || amxBf16, avx512Fp16 || amxFp16, description);
    }

    private static DeviceCapabilities DetectCuda(int ordinal)
    {
        (int Major, int Minor)? capability = CudaDriver.ComputeCapability(ordinal);
        if (capability is not var (major, minor))
        {
            // Without the driver's answer, claim nothing: auto then stays on fp32, which every GPU runs.
            return new DeviceCapabilities(false, false, $"CUDA device {ordinal} of unknown compute capability");
        }
        return new DeviceCapabilities(major >= 8, major >= 7, $"CUDA device {ordinal} with compute capability {major}.{minor}");
    }

    /// <summary>The CUDA driver API (libcuda, shipped with every NVIDIA driver), asked only for the compute capability.</summary>
    private static class CudaDriver
    {
        private const int ComputeCapabilityMajor = 75; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        private const int ComputeCapabilityMinor = 76; // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

        public static unsafe (int, int)? ComputeCapability(int ordinal)
        {
            string name = OperatingSystem.IsWindows() ? "nvcuda.dll" : "libcuda.so.1";
            if (!NativeLibrary.TryLoad(name, out IntPtr library))
            {
                return null;
            }
            if (!NativeLibrary.TryGetExport(library, "cuInit", out IntPtr init)
                || !NativeLibrary.TryGetExport(library, "cuDeviceGet", out IntPtr deviceGet)
                || !NativeLibrary.TryGetExport(library, "cuDeviceGetAttribute", out IntPtr getAttribute))
            {
                return null;
            }
            var cuInit = (delegate* unmanaged<uint, int>)init;
            var cuDeviceGet = (delegate* unmanaged<int*, int, int>)deviceGet;
            var cuDeviceGetAttribute = (delegate* unmanaged<int*, int, int, int>)getAttribute;
            int device, major, minor;
            if (cuInit(0) != 0 || cuDeviceGet(&device, ordinal) != 0
                || cuDeviceGetAttribute(&major, ComputeCapabilityMajor, device) != 0
                || cuDeviceGetAttribute(&minor, ComputeCapabilityMinor, device) != 0)
            {
                return null;
            }
            return (major, minor);
        }
    }
}
