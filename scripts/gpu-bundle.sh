#!/usr/bin/env bash
# Builds the self-contained GPU bundle (issues #4 and #5, DESIGN §5): a jlink'd Java runtime, the scheduler,
# linear algebra and samples jars with JCuda, JCublas and OpenBLAS, the stream and device-algebra test classes,
# the JUnit console launcher, the PTX (inside the scheduler jar) and run.sh, which runs the gpu-tagged tests and
# the GPU streams benchmark on a host that has an NVIDIA driver and no JDK. The directory is over 64 MiB
# unpacked (libjvm and OpenBLAS), so it travels as poniard-gpu.tar.gz, whose size is checked:
#   tar xzf poniard-gpu.tar.gz && poniard-gpu/run.sh
# Usage: scripts/gpu-bundle.sh [OUT_DIR]   (default build/gpu-bundle; prints the sizes)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/build/gpu-bundle}"
bundle="$out/poniard-gpu"
limit_mib=64

if ! command -v jlink >/dev/null 2>&1 || ! command -v jdeps >/dev/null 2>&1; then
  echo "gpu-bundle: jlink and jdeps are needed (a full JDK 17, e.g. apt-get install openjdk-17-jdk-headless)" >&2
  exit 2
fi

cd "$root"
echo "gpu-bundle: building scheduler, linear algebra and samples (tests compiled, not run)..." >&2
./mvnw -q -B -pl scheduler,linalg-kernels,samples -am -DskipTests package >&2

junit_version="$(sed -n 's:.*<junit.version>\(.*\)</junit.version>.*:\1:p' pom.xml | head -1)"
platform_version="1.${junit_version#5.}"   # JUnit 5.x.y ships with Platform 1.x.y
console="org.junit.platform:junit-platform-console-standalone:$platform_version"

rm -rf "$bundle"
mkdir -p "$bundle/lib" "$bundle/junit" "$bundle/test-classes"

# The scheduler's test class path (runtime dependencies, JCuda, logback), without JUnit: the console
# launcher brings its own copy of the same JUnit version.
cp_file="$(mktemp)"
trap 'rm -f "$cp_file"' EXIT
./mvnw -q -B -pl scheduler dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$cp_file" >&2
# Aeron comes along for the device algebra's two-rank tests (a LocalCluster in one JVM).
tr ':' '\n' < "$cp_file" | grep -v -e '/org/junit/' -e '/opentest4j/' -e '/apiguardian/' \
  | while read -r jar; do cp "$jar" "$bundle/lib/"; done
# The device algebra's run time beyond the scheduler's: OpenBLAS (the host side and POTRF), JavaCPP and JCublas;
# not ND4J and its dependencies, which the device algebra does not load.
./mvnw -q -B -pl linalg-kernels dependency:build-classpath -Dmdep.includeScope=runtime -Dmdep.outputFile="$cp_file" >&2
tr ':' '\n' < "$cp_file" | grep -e '/org/bytedeco/' -e '/org/jcuda/jcublas' \
  | while read -r jar; do cp -n "$jar" "$bundle/lib/"; done
cp scheduler/target/poniard-scheduler-*.jar linalg-kernels/target/poniard-linalg-kernels-*.jar "$bundle/lib/"
# From samples only the streams benchmark (with its tile-algebra cases' residuals) and the report writer (the CLI
# jar also carries DL4J code and MNIST).
(cd samples/target/classes && jar --create --file "$bundle/lib/poniard-samples-streams.jar" \
  dev/poniard/samples/streams dev/poniard/samples/bench/BenchReport.class dev/poniard/samples/bench/BenchResult.class \
  dev/poniard/samples/bench/BenchOptions.class dev/poniard/samples/bench/BenchSuite.class \
  dev/poniard/samples/linalg/Residuals.class)
./mvnw -q -B dependency:copy -Dartifact="$console" -DoutputDirectory="$bundle/junit" >&2
mv "$bundle/junit/"junit-platform-console-standalone-*.jar "$bundle/junit/junit-platform-console-standalone.jar"

# Only the stream tests travel (the rest of the scheduler's tests need no GPU and run in the normal build).
(cd scheduler/target/test-classes && cp --parents -r dev/poniard/scheduler/stream "$bundle/test-classes/" \
  && cp junit-platform.properties logback-test.xml "$bundle/test-classes/")
(cd linalg-kernels/target/test-classes && cp --parents dev/poniard/linalg/DeviceTileAlgebra*.class \
  dev/poniard/linalg/SpmdDeviceTileAlgebra*.class dev/poniard/linalg/TwoRankFixture.class \
  dev/poniard/linalg/Dense.class dev/poniard/linalg/device/*.class "$bundle/test-classes/")

# A runtime with the modules these jars use (jdeps over them lists java.base, java.logging (JCuda), java.xml
# (logback's configuration), java.sql (the JUnit console, Jackson), java.naming and java.management (logback,
# Agrona); jdk.unsupported is Unsafe for Agrona and JCTools, jdk.zipfs for reading jars as file systems.
modules=java.base,java.logging,java.management,java.naming,java.sql,java.xml,jdk.unsupported,jdk.zipfs
echo "gpu-bundle: jlink --add-modules $modules" >&2
jlink --add-modules "$modules" --strip-debug --no-man-pages --no-header-files --compress=2 --output "$bundle/runtime"
# Debian's libjvm.so keeps its symbol table (~4 MiB); the JVM runs without it.
if command -v strip >/dev/null 2>&1; then
  chmod u+w "$bundle/runtime/lib/server/libjvm.so" && strip --strip-unneeded "$bundle/runtime/lib/server/libjvm.so"
fi

cat > "$bundle/run.sh" <<'RUN'
#!/bin/sh
# Runs Poniard's GPU checks with the bundled Java runtime (no JDK needed; the NVIDIA driver must be installed).
#   ./run.sh          detection, the gpu-tagged tests, then the GPU streams benchmark (gpu_ cases)
#   ./run.sh detect   which CUDA devices the driver reports (exit 3: none)
#   ./run.sh tests    the gpu-tagged tests only      ./run.sh all-tests   every stream test (CPU emulation too)
#   ./run.sh bench    the benchmark only (gpu_ cases; BENCH_ARGS="--quick" for a short run, "" for cpu_ too)
# Results go to results/: JUnit XML in results/junit, the benchmark's JSON in results/streams-gpu.json, the tile
# cases' stream timelines (Chrome traces) in results/timelines; where
# $OUT names a directory (the device runner's output folder), results/ is copied there at the end.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
java="$here/runtime/bin/java"
cp="$(ls "$here"/lib/*.jar | tr '\n' ':')$here/test-classes"
mkdir -p "$here/results" "$here/tmp" 2>/dev/null
tmp="$here/tmp"; [ -w "$tmp" ] || tmp="${TMPDIR:-/tmp}"
flags="-Djava.io.tmpdir=$tmp -Dorg.bytedeco.javacpp.cachedir=$tmp/javacpp --add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED ${PONIARD_JAVA_OPTS:-}"
limit() { if command -v timeout >/dev/null 2>&1; then timeout "$@"; else shift; "$@"; fi; }

detect() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L
  "$java" $flags -cp "$cp" dev.poniard.scheduler.stream.cuda.CudaDevices
}
tests() { # $1: extra launcher options
  limit 240 "$java" $flags -cp "$cp:$here/junit/junit-platform-console-standalone.jar" \
    org.junit.platform.console.ConsoleLauncher execute --disable-banner --disable-ansi-colors --details=tree \
    --select-package dev.poniard.scheduler.stream --select-package dev.poniard.linalg $1 \
    --reports-dir "$here/results/junit"
}
bench() {
  limit 240 "$java" $flags -cp "$cp" dev.poniard.samples.streams.StreamsBenchMain ${BENCH_ARGS---gpu-only} \
    --json "$here/results/streams-gpu.json" --timelines "$here/results/timelines"
}

case "${1:-all}" in
  detect) detect; rc=$? ;;
  tests) tests "--include-tag gpu"; rc=$? ;;
  all-tests) tests ""; rc=$? ;;
  bench) bench; rc=$? ;;
  all)
    detect; echo
    tests "--include-tag gpu"; t=$?
    echo; bench; b=$?
    echo "run.sh: tests exit $t, bench exit $b"
    rc=0; [ "$t" -eq 0 ] && [ "$b" -eq 0 ] || rc=1 ;;
  *) echo "usage: $0 [all|detect|tests|all-tests|bench]" >&2; exit 2 ;;
esac
if [ -n "${OUT:-}" ] && [ -d "$OUT" ] && [ -w "$OUT" ]; then cp -r "$here/results" "$OUT/"; fi
exit "$rc"
RUN
chmod +x "$bundle/run.sh"

size_kib="$(du -sk "$bundle" | cut -f1)"
tar -czf "$out/poniard-gpu.tar.gz" -C "$out" poniard-gpu
tar_kib="$(du -sk "$out/poniard-gpu.tar.gz" | cut -f1)"
echo "gpu-bundle: $bundle is $((size_kib / 1024)) MiB; $out/poniard-gpu.tar.gz is $((tar_kib / 1024)) MiB (limit $limit_mib MiB)" >&2
if [ "$tar_kib" -ge $((limit_mib * 1024)) ]; then
  echo "gpu-bundle: the bundle is over $limit_mib MiB packed; it cannot travel to the GPU host" >&2
  exit 1
fi
