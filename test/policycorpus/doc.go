// Package policycorpus holds the corpora that pin what the packaged default
// policy (packaging/policy.yaml) decides: testdata/dangerous.txt, commands
// that must all be denied with a reason, and testdata/legitimate.txt,
// diagnostics as models write them, of which at least 97% must be allowed.
// Its tests send every line through the real `nannyagent policy test`
// binary, check the file with `policy check --strict` as installed
// (root-owned, 0644), read `policy explain`, and run the allowed ps forms
// against the real procps to show that none prints a process environment.
//
// Read and DecodeEscapes load a corpus for other tests (test/e2e runs the
// same corpora through the real broker).
package policycorpus
