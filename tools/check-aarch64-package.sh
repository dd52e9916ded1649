#!/usr/bin/env bash
# The MiniCPM4.Runtime.linux-arm64 package end to end: packs it from the aarch64 cross build
# (tools/check-aarch64.sh builds build/aarch64/native), restores it into a fresh project with its own
# NuGet cache, checks the restored library is an aarch64 ELF at runtimes/linux-arm64/native/, and runs
# engine tests under QEMU with the library loaded from the restored package (LD_LIBRARY_PATH comes
# before the test binaries' RUNPATH; the loader's log proves which file was used).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${BUILD_DIR:-build}/aarch64/native
lib=$out/libminicpm4.so
[ -f "$lib" ] || { echo "$lib does not exist: run tools/check-aarch64.sh first"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
version=$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props | head -1)

dotnet pack packaging/MiniCPM4.Runtime.linux-arm64 -c Release -o "$tmp/packages" --artifacts-path "$tmp/pack-build" \
  -nologo -v q -clp:ErrorsOnly -p:MiniCpmArm64NativeLibrary="$PWD/$lib" -nodeReuse:false

# A fresh consumer outside the repository: only the package under test comes from the local folder.
cache=${NUGET_PACKAGES:-$HOME/.nuget/packages}
mkdir -p "$tmp/app"
echo '<Project />' > "$tmp/Directory.Build.props"
echo '<Project />' > "$tmp/Directory.Build.targets"
cat > "$tmp/nuget.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="under-test" value="$tmp/packages" />
    $( [ -d "$cache" ] && echo "<add key=\"machine-cache\" value=\"$cache\" />" )
  </packageSources>
</configuration>
XML
cat > "$tmp/app/App.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
  <ItemGroup><PackageReference Include="MiniCPM4.Runtime.linux-arm64" Version="$version" /></ItemGroup>
</Project>
XML
NUGET_PACKAGES="$tmp/nuget-cache" dotnet restore "$tmp/app" -nologo -v q -nodeReuse:false
native="$tmp/nuget-cache/minicpm4.runtime.linux-arm64/$version/runtimes/linux-arm64/native"
restored="$native/libminicpm4.so"
[ -f "$restored" ] || { echo "the restored package has no $restored"; exit 1; }
readelf -h "$restored" | grep -q 'Machine:.*AArch64' || { echo "$restored is not an aarch64 library"; exit 1; }
cmp -s "$restored" "$lib" || { echo "the packaged library differs from $lib"; exit 1; }

# The engine from the package, under QEMU: build information and ABI checks, then whole-model forward passes. The
# test binaries ask for the library's soname (libminicpm4.so.0): a link to the restored file answers it.
mkdir -p "$tmp/lib"
ln -s "$restored" "$tmp/lib/libminicpm4.so.0"
log="$tmp/qemu.log"
status=0
for t in "test_abi:AbiInfo.*" "test_model:*ModelVsReference.*/gqa2_hd128_untied_bf16:SessionTest.RewindThenRedecodeReproducesLogits"; do
  LD_LIBRARY_PATH="$tmp/lib" LD_DEBUG=libs qemu-aarch64 -L /usr/aarch64-linux-gnu "$out/tests/${t%%:*}" \
    --gtest_filter="${t#*:}" --gtest_brief=1 >"$log" 2>&1 || status=$?
  grep -E '^\[  (PASSED|FAILED)|tests? ran' "$log" || true
  if [ "$status" -ne 0 ]; then tail -40 "$log"; exit "$status"; fi
  grep -q "calling init: $tmp/lib/libminicpm4.so.0" "$log" ||
    { echo "${t%%:*} did not load the restored library"; grep libminicpm4 "$log" | head; exit 1; }
done
echo "MiniCPM4.Runtime.linux-arm64 $version: restored, aarch64, and the engine ran from the package under QEMU"
