// Package policycorpus holds the corpora that pin what the packaged default
// policy (packaging/policy.yaml) decides: testdata/dangerous.txt, commands
// that must all be denied with a reason, and testdata/legitimate.txt,
// diagnostics as models write them, of which at least 97% must be allowed.
// Its tests judge every line in process, as `nannyagent policy test` does,
// and start the real binary once per command form to pin that it says the
// same (`policy test` in JSON and text, `policy check`, `check --strict` as
// installed: root-owned, 0644, and `policy explain`); they also run the
// allowed ps forms against the real procps to show that none prints a
// process environment.
//
// Read and DecodeEscapes load a corpus for other tests (test/e2e runs the
// same corpora through the real broker).
package policycorpus
