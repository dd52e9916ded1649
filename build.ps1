# Build and run MiniCPM4.NET on Windows (PowerShell). Same verbs as build.sh:
#   ./build.ps1          build native + managed (Release), generate from the bundled demo model (models/demo)
#   ./build.ps1 test     build and run the native tests and the managed tests
#   ./build.ps1 bench    build, then run the native benchmark with the remaining arguments
#   ./build.ps1 cli      build, then run the minicpm4 CLI with the remaining arguments
# Sanitizer builds are only run by build.sh (GCC/Clang).
param([string]$Verb = "run", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$BuildDir = if ($env:BUILD_DIR) { $env:BUILD_DIR } else { "build" }

function Build-Native([string[]]$Extra) {
  # The CPU-only library, as build.sh builds it (the CUDA backend: README, "CUDA backend").
  cmake -S native -B "$BuildDir/native" -DMCPM_CUDA=OFF @Extra
  if ($LASTEXITCODE -ne 0) { throw "cmake configure failed" }
  cmake --build "$BuildDir/native" --config Release --parallel
  if ($LASTEXITCODE -ne 0) { throw "build failed" }
}

function Native-Library {
  $candidates = @("$BuildDir/native/Release/minicpm4.dll", "$BuildDir/native/minicpm4.dll", "$BuildDir/native/libminicpm4.so")
  foreach ($c in $candidates) { if (Test-Path $c) { return (Resolve-Path $c).Path } }
  throw "the native library was not found under $BuildDir/native"
}

function Build-Managed {
  dotnet build MiniCPM4.sln -c Release -nologo "-p:MiniCpmNativeLibrary=$(Native-Library)"
  if ($LASTEXITCODE -ne 0) { throw "managed build failed" }
}

function Cli-Path {
  $candidates = @("src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4.exe", "src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4")
  foreach ($c in $candidates) { if (Test-Path $c) { return $c } }
  throw "minicpm4 was not built"
}

function Bench-Path {
  $candidates = @("$BuildDir/native/bench/Release/mcpm_bench.exe", "$BuildDir/native/bench/mcpm_bench.exe", "$BuildDir/native/bench/mcpm_bench")
  foreach ($c in $candidates) { if (Test-Path $c) { return $c } }
  throw "mcpm_bench not found under $BuildDir/native/bench"
}

switch ($Verb) {
  "run" {
    Build-Native @("-DMCPM_BUILD_TESTS=OFF")
    Build-Managed
    & (Cli-Path) generate -p "Once upon a time" --max-tokens 48 --temperature 0.8 --seed 7
  }
  "test" {
    Build-Native @("-DMCPM_BUILD_TESTS=ON")
    ctest --test-dir "$BuildDir/native" -C Release --output-on-failure
    if ($LASTEXITCODE -ne 0) { throw "native tests failed" }
    Build-Managed
    dotnet test MiniCPM4.sln -c Release --no-build -nologo
    if ($LASTEXITCODE -ne 0) { throw "managed tests failed" }
  }
  "cli" {
    Build-Native @("-DMCPM_BUILD_TESTS=OFF")
    Build-Managed
    & (Cli-Path) @Rest
  }
  "bench" {
    Build-Native @("-DMCPM_BUILD_TESTS=OFF")
    & (Bench-Path) @Rest
  }
  default { Write-Error "usage: ./build.ps1 [run|test|bench ARGS...|cli ARGS...]"; exit 2 }
}
