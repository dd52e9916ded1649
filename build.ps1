# Build and run MiniCPM4.NET on Windows (PowerShell). Same verbs as build.sh:
#   ./build.ps1          build the native engine (Release) and run the CPU benchmark
#   ./build.ps1 test     build and run the native tests
#   ./build.ps1 bench    build, then run the benchmark with the remaining arguments
# Sanitizer builds are only run by build.sh (GCC/Clang).
param([string]$Verb = "run", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$BuildDir = if ($env:BUILD_DIR) { $env:BUILD_DIR } else { "build" }

function Build-Native([string[]]$Extra) {
  cmake -S native -B "$BuildDir/native" @Extra
  if ($LASTEXITCODE -ne 0) { throw "cmake configure failed" }
  cmake --build "$BuildDir/native" --config Release --parallel
  if ($LASTEXITCODE -ne 0) { throw "build failed" }
}

function Bench-Path {
  $candidates = @("$BuildDir/native/bench/Release/mcpm_bench.exe", "$BuildDir/native/bench/mcpm_bench.exe", "$BuildDir/native/bench/mcpm_bench")
  foreach ($c in $candidates) { if (Test-Path $c) { return $c } }
  throw "mcpm_bench not found under $BuildDir/native/bench"
}

switch ($Verb) {
  "run" {
    Build-Native @("-DMCPM_BUILD_TESTS=OFF")
    & (Bench-Path) --preset minicpm4-0.5b --prompt-tokens 128 --gen-tokens 32
  }
  "test" {
    Build-Native @("-DMCPM_BUILD_TESTS=ON")
    ctest --test-dir "$BuildDir/native" -C Release --output-on-failure
    if ($LASTEXITCODE -ne 0) { throw "tests failed" }
  }
  "bench" {
    Build-Native @("-DMCPM_BUILD_TESTS=OFF")
    & (Bench-Path) @Rest
  }
  default { Write-Error "usage: ./build.ps1 [run|test|bench ARGS...]"; exit 2 }
}
