package preprocess

// Test helpers of this package, exported to the external tests in package
// preprocess_test (modelgen_test.go), which cannot be internal: modelgen imports
// preprocess.
var (
	Texts        = texts
	CheckBounded = checkBounded
)
