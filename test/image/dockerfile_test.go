package image

import (
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// No Docker engine runs where the tests do, so the Dockerfile is never
// built here. TestDockerfileDescribesTheImage holds it to the image `make
// image` builds instead: the same go build (environment, flags, and the
// ldflags found in the image's binary), base, user, entrypoint, command and
// labels. A change to one that is not made to the other fails here.

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd, args string
}

func parseDockerfile(t *testing.T) []instruction {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// finalStage is the instructions after the last FROM, and that FROM.
func finalStage(ins []instruction) (from string, stage []instruction) {
	for i := len(ins) - 1; i >= 0; i-- {
		if ins[i].cmd == "FROM" {
			return ins[i].args, ins[i+1:]
		}
	}
	return "", nil
}

func TestDockerfileDescribesTheImage(t *testing.T) {
	ins := parseDockerfile(t)
	from, final := finalStage(ins)
	if !strings.HasPrefix(from, "gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("final stage FROM %q, want the distroless static nonroot base", from)
	}
	var user, entrypoint, cmd string
	labels := map[string]string{}
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "ENTRYPOINT":
			entrypoint = in.args
		case "CMD":
			cmd = in.args
		case "LABEL":
			for _, m := range labelRE.FindAllStringSubmatch(in.args, -1) {
				labels[m[1]] = m[2]
			}
		case "RUN":
			t.Errorf("RUN in the final stage (%q): the base has no shell to run it", in.args)
		}
	}
	if user != "65532:65532" {
		t.Errorf("USER %q, want 65532:65532", user)
	}
	if !jsonEqual(entrypoint, []string{"/tokenstore"}) || !jsonEqual(cmd, []string{"serve"}) {
		t.Errorf("ENTRYPOINT %s CMD %s, want [\"/tokenstore\"] [\"serve\"]", entrypoint, cmd)
	}

	// The image's labels, with the build args for what varies; created is
	// left to the builder (BuildKit stamps SOURCE_DATE_EPOCH).
	want := wantLabels()
	delete(want, "org.opencontainers.image.created")
	want["org.opencontainers.image.revision"] = "${COMMIT}"
	want["org.opencontainers.image.version"] = "${VERSION}"
	for k, v := range want {
		if labels[k] != v {
			t.Errorf("Dockerfile LABEL %s=%q, want %q", k, labels[k], v)
		}
	}
	for k := range labels {
		if _, ok := want[k]; !ok {
			t.Errorf("Dockerfile LABEL %s is not on the image make image builds", k)
		}
	}

	// The build: the one go build command, for the target platform.
	var build string
	for _, in := range ins {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			if build != "" {
				t.Fatalf("two go build commands in the Dockerfile")
			}
			build = in.args
		}
	}
	if build == "" {
		t.Fatal("no go build in the Dockerfile")
	}
	env, args, ok := strings.Cut(build, "go build")
	if !ok {
		t.Fatal("unreachable")
	}
	for _, kv := range []string{"CGO_ENABLED=0", "GOOS=$TARGETOS", "GOARCH=$TARGETARCH", "GOFLAGS="} {
		if !slices.Contains(strings.Fields(env), kv) {
			t.Errorf("the go build does not set %s (environment %q)", kv, env)
		}
	}
	for _, flag := range []string{"-trimpath", "-buildvcs=false", "./cmd/tokenstore"} {
		if !slices.Contains(strings.Fields(args), flag) {
			t.Errorf("the go build lacks %s: %q", flag, args)
		}
	}
	if strings.Contains(args, "-tags") {
		t.Errorf("the go build has build tags (%q); the production binary has none", args)
	}
	m := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(args)
	if m == nil {
		t.Fatalf("no -ldflags \"...\" in %q", args)
	}
	// Go does not record -ldflags in a -trimpath binary, so the Dockerfile's
	// are compared with the Makefile's, which make image passed, and their
	// effects are looked for in the image's binary: -X in TestBinaryRuns,
	// -s and -w here.
	// (make would expand ${VERSION}, so it gets placeholders.)
	got := strings.NewReplacer("${VERSION}", "@VERSION@", "${COMMIT}", "@COMMIT@").Replace(m[1])
	if want := makefileLDFLAGS(t, "@VERSION@", "@COMMIT@"); got != want {
		t.Errorf("Dockerfile -ldflags %q, the Makefile's LDFLAGS %q", got, want)
	}
	bin := filepath.Join(built.rootfs["linux/amd64"], "tokenstore")
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, sec := range f.Sections {
		if sec.Name == ".symtab" || strings.HasPrefix(sec.Name, ".debug_") || strings.HasPrefix(sec.Name, ".zdebug_") {
			t.Errorf("the image's binary has a %s section: not linked with -s -w", sec.Name)
		}
	}

	// What make image's go build recorded in the binary it put in the image.
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"-trimpath": "true", "CGO_ENABLED": "0"} {
		if got := setting(info, key); got != want {
			t.Errorf("the image's binary was built with %s=%q, the Dockerfile's %q", key, got, want)
		}
	}

	// The same Go release: the Dockerfile's golang image and the toolchain
	// that built the image (the one go.mod asks for).
	var builder string
	for _, in := range ins {
		if in.cmd == "FROM" && strings.Contains(in.args, "golang:") {
			builder = in.args
		}
	}
	if !strings.Contains(builder, "golang:"+strings.TrimPrefix(info.GoVersion, "go")+"-") {
		t.Errorf("the Dockerfile builds with %q; make image built with %s", builder, info.GoVersion)
	}
	if !strings.Contains(builder, "--platform=$BUILDPLATFORM") {
		t.Errorf("the build stage %q does not run on the build platform (it would emulate the target)", builder)
	}
	for _, arg := range []string{"TARGETOS", "TARGETARCH", "VERSION=dev", "COMMIT=unknown"} {
		if !slices.ContainsFunc(ins, func(in instruction) bool { return in.cmd == "ARG" && in.args == arg }) {
			t.Errorf("no ARG %s", arg)
		}
	}
}

// makefileLDFLAGS is the Makefile's LDFLAGS for this version and commit,
// as `make image` passes them to hack/image (read from make's dry run).
func makefileLDFLAGS(t *testing.T, version, commit string) string {
	t.Helper()
	cmd := exec.Command("make", "-s", "-n", "--no-print-directory", "image", "VERSION="+version, "COMMIT="+commit, "IMAGE_DIR="+t.TempDir())
	cmd.Dir = repoRoot()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n image: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`-ldflags '([^']*)'`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("make -n image passes no -ldflags '...':\n%s", out)
	}
	return string(m[1])
}

var labelRE = regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`)

func jsonEqual(s string, want []string) bool {
	var got []string
	return json.Unmarshal([]byte(s), &got) == nil && slices.Equal(got, want)
}
