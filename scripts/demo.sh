#!/usr/bin/env bash
# The main job on a fresh Debian machine, as root: set up, bring up the throwaway
# test-bed hosts (network namespaces with real sshd: `deb`, a Debian trixie root,
# and `tiny`, busybox only; direct and 20 ms `-wan` paths), and run local programs
# through outrun on them. KEEP=1 leaves the test bed up (later: deno task testbed down).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
source scripts/env.sh
work=$(mktemp -d)
cleanup() {
  cd "$repo"
  rm -rf "$work"
  [ -n "${KEEP:-}" ] || deno run -A "$repo/tests/testbed/cli.ts" down
}
trap cleanup EXIT
deno run -A tests/testbed/cli.ts up >/dev/null
cfg=/run/outrun-testbed/ssh_config
echo "== the test bed, reached with the project's own ssh configuration ($cfg)"
for host in deb deb-wan tiny tiny-wan; do
  line=$(ssh -F "$cfg" "$host" 'echo "$(uname -n): $(head -1 /etc/os-release 2>/dev/null || echo busybox only)"')
  echo "  $host: $line"
done

echo "== outrun: local programs on the remote's CPU; files come from here, output lands here"
outrun="$repo/outrun"
"$outrun" --version
cd "$work"
echo 21 >data.txt
ffmpeg -loglevel error -f lavfi -i testsrc=duration=1:size=160x120:rate=10 -pix_fmt yuv420p in.y4m
set -x
"$outrun" -F "$cfg" deb sh -c 'echo "running on $(uname -n); its /etc/os-release: $(head -1 /etc/os-release)"'
"$outrun" -F "$cfg" deb python3 -c 'print("python3 doubles data.txt:", 2 * int(open("data.txt").read()))'
printf foobar | "$outrun" -F "$cfg" deb base64
"$outrun" -F "$cfg" deb-wan ffmpeg -loglevel error -i in.y4m -c:v mpeg4 out.avi
ls -la out.avi
"$outrun" -F "$cfg" tiny sh -c 'echo "busybox-only host $(uname -n) runs this machine'"'"'s sh: $(head -1 /etc/os-release)"'
set +x
echo "== the same transcode again over the 20 ms path: the remote cache answers (--stats)"
"$outrun" -F "$cfg" --stats deb-wan ffmpeg -loglevel error -y -i in.y4m -c:v mpeg4 out.avi
echo "== commands sharing one session (ControlMaster, as in ssh): the first starts a master"
shared=(-F "$cfg" -o ControlMaster=auto -o ControlPersist=60)
"$outrun" "${shared[@]}" deb-wan ffmpeg -version | head -1
"$outrun" "${shared[@]}" -O check deb-wan
time "$outrun" "${shared[@]}" deb-wan ffmpeg -version | head -1
time ssh -F "$cfg" deb-wan true
"$outrun" "${shared[@]}" -O exit deb-wan
echo "== a build: make -j2 of a generated 12-unit C project with local headers, objects land here"
deno eval "import { writeCProject } from '$repo/scripts/bench/c_project.ts'; await writeCProject('$work/proj', 11);"
time "$outrun" -F "$cfg" --stats deb-wan make -s -j2 -C proj
./proj/prog
cp -r proj local && make -s -B -C local && cmp proj/prog local/prog && echo "the program built there is byte-identical to the one built here"
