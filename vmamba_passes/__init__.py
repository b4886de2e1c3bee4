"""The library's front door: ``compile_model`` and what it returns or raises.

    from vmamba_passes import compile_model
    result = compile_model("naive.onnx", "cpu", output="cpu.onnx")
"""
from vmamba_passes.compiler import (BadInput, CompileError, CompileResult, PassFailed, VerificationFailed,
                                    compile_model, resolve_pipeline)

__all__ = ["compile_model", "CompileResult", "CompileError", "BadInput", "VerificationFailed", "PassFailed",
           "resolve_pipeline"]
