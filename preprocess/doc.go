// Package preprocess is tfgate's declarative, versioned preprocessing: each model
// version ships a spec, assets.extra/tfgate-preprocess.json inside its version
// directory, that says how typed instances (text, numeric and categorical
// features) become the version's TF input tensors and how its output tensors
// become typed predictions. Because the spec travels inside the version directory,
// a request is always preprocessed by the pipeline of the version that serves it.
//
// # Invariants
//
//   - A Pipeline (from Load or Parse) is immutable: Encode and Decode are pure
//     functions of their arguments, do no I/O and are safe for concurrent use.
//   - Encode checks every bound before encoding: at most limits.max_instances
//     instances, text and categorical values at most limits.max_text_bytes of valid
//     UTF-8, numeric values finite, no unknown feature names, no missing feature
//     without a declared default, no instance kind the spec does not take. Errors are
//     *InputError values wrapping ErrInvalidInput (and ErrLimit for the two size
//     limits); their message names the instance index and the feature and says
//     what to fix.
//   - Encode's output is bounded by the spec: exactly the inputs Inputs() lists,
//     each of shape [n, width] ([n] or [n, 1] for text.strings) with n the number
//     of instances and width fixed by the spec; token ids are always vocabulary
//     ids, masks are 0 or 1 with real tokens first, padding carries the pad id.
//   - Parse rejects unknown fields, reports every problem at once with the path of
//     the field at fault (errors wrap ErrSpec), and caps every size a spec can
//     declare (see the Max* constants), including max_instances times the summed
//     input widths (MaxElementsPerRequest) and the asset bytes one spec reads, so
//     no spec makes Parse or Encode allocate without bound. Specs and assets are
//     read through os.Root: nothing outside the version directory, symlinks
//     included.
//   - Decode never modifies the output tensors; a missing or malformed output
//     wraps ErrOutput (a server-side problem), top_k without a scores output wraps
//     ErrInvalidInput.
//   - Fingerprint hashes the spec and every asset it read: equal fingerprints
//     mean identical preprocessing.
//   - Store follows every <root>/<model>/<version>/ and swaps immutable
//     snapshots atomically; a version whose spec is missing or invalid is present
//     with its error, so the gateway can say why it is not routable. Versions
//     are read once and re-read only when their directory or spec file is
//     replaced. Versions are treated as immutable, as TF Serving and modelsync
//     treat them: a model directory whose mtime has not moved (and did not move
//     within 2 s before it was read) costs one stat per scan; versions without a
//     usable spec are re-checked every scan.
//   - Memory follows the distinct specs in use, not the catalog. A snapshot
//     keeps per version its directory, stamp and SpecHash (the content hash of
//     the spec and every asset it reads), no compiled pipeline. Pipelines live in
//     a byte-bounded LRU keyed by SpecHash (StoreOptions.CacheBytes, default
//     64 MiB of estimated bytes; at most the budget plus one pipeline), so
//     versions with identical specs share one pipeline, a spec met again by a
//     scan is not compiled again, and compiled vocabularies are shared between
//     cached pipelines whose vocabulary files are byte-identical. The disk is
//     the source of truth: a miss reads and compiles the version's directory
//     again (concurrent misses of one hash compile once), and the result must
//     have the version's SpecHash, else ErrSpecChanged: a pipeline is never
//     served under the hash of another content.
//
// # Concurrency
//
// Pipeline and Snapshot are immutable. Store.Run owns the polling loop and
// returns nil when its context is cancelled; Scan may also be called directly
// (scans are serialized). Get, SpecHash, Pipeline, Snapshot, Err, Ready and
// Changes may be called from any goroutine (a cache miss in Get or Pipeline
// compiles in the caller). Changes holds at most one pending signal and is meant for a
// single consumer, which re-reads Snapshot on each receive.
//
// # Spec format (tfgate-preprocess/v1)
//
// A spec is a JSON object. Paths name files relative to the model version
// directory. Unknown fields are errors.
//
//	{
//	  "format": "tfgate-preprocess/v1",        // required, exactly this
//	  "description": "intent classifier, vocab v7",
//	  "metadata": {"owner": "search-ml"},       // free-form strings, carried along
//	  "limits": {
//	    "max_instances": 256,                   // default 256, at most 65536
//	    "max_text_bytes": 16384                 // default 16384; also caps categorical values
//	  },
//	  "text": {                                 // optional: the model takes text
//	    "normalize": {
//	      "form": "NFKC",                       // NFKC (default), NFC, NFKD, NFD or none
//	      "case_fold": true,                    // default true: Unicode full case folding
//	      "strip_accents": false                // default false: NFD, then drop marks (Mn)
//	    },
//	    "tokenize": {                           // whitespace always splits
//	      "punctuation": true,                  // default true: each punctuation char is a token
//	      "cjk": true,                          // default true: each CJK ideograph is a token
//	      "symbols": false                      // default false: each symbol (S*, e.g. emoji) is a token
//	    },
//	    "wordpiece": {
//	      "vocab": "assets/vocab.txt",          // required: one token per line, id = line number from 0
//	      "unk_token": "[UNK]",                 // default "[UNK]", must be in the vocabulary
//	      "continuation_prefix": "##",          // default "##"
//	      "max_chars_per_word": 100             // default 100: longer words become [UNK]
//	    },
//	    "max_length": 128,                      // required: ids per instance, truncated and padded
//	    "prefix_tokens": ["[CLS]"],             // default none: added before the text
//	    "suffix_tokens": ["[SEP]"],             // default none: added after the (truncated) text
//	    "pad_token": "[PAD]",                   // default "[PAD]"
//	    "allow_empty": false,                   // default false: empty text is an error
//	    "token_ids":      {"input": "input_ids",      "dtype": "DT_INT64", "shape": [-1, 128]},
//	    "attention_mask": {"input": "attention_mask", "dtype": "DT_INT64", "shape": [-1, 128]},
//	    "token_type_ids": {"input": "token_type_ids", "dtype": "DT_INT64"}
//	  },
//	  "features": [                             // optional: groups of features, one TF input each
//	    {
//	      "input": "features", "dtype": "DT_FLOAT", "shape": [-1, 8],
//	      "numeric": [
//	        {"name": "age", "slot": 0, "mean": 41.5, "std": 12.25, "default": 41.5},
//	        {"name": "income", "slot": 1, "mean": 52000, "std": 21000}
//	      ],
//	      "categorical": [
//	        {"name": "country", "slot": 2, "vocab": ["us", "de", "fr"], "oov_buckets": 1, "default": "us"},
//	        {"name": "device", "slot": 6, "hash_buckets": 1000, "encoding": "index"},
//	        {"name": "plan", "slot": 7, "vocab_file": "assets/plans.txt", "encoding": "index"}
//	      ]
//	    }
//	  ],
//	  "outputs": [                              // at least one; at most one of each kind
//	    {"output": "scores", "kind": "scores", "activation": "none", "labels": "assets/labels.txt"},
//	    {"output": "embedding", "kind": "embedding"}
//	  ]
//	}
//
// Text steps run in this order:
//
//  1. Clean: drop control and format characters (Cc, Cf, U+FFFD); tabs and line
//     breaks become spaces.
//  2. Normalize: the Unicode form, then case folding, then the form again (so
//     NFKC + case_fold is NFKC_Casefold), then accent stripping if asked.
//  3. Split on whitespace; punctuation (BERT's definition: all non-alphanumeric
//     printable ASCII plus Unicode P*), CJK ideographs and symbols become tokens of
//     their own as configured.
//  4. WordPiece: greedy longest-match-first over the vocabulary; pieces after the
//     first in a word match entries with the continuation prefix. A word with any
//     unmatched part, or over max_chars_per_word runes, becomes one unk_token.
//  5. prefix_tokens + pieces + suffix_tokens, truncated to max_length keeping the
//     first pieces (the suffix always stays), then padded with pad_token.
//     attention_mask is 1 for real tokens (including prefix and suffix), 0 for
//     padding; token_type_ids are all 0.
//
// Models that tokenize inside their graph take the text itself: replace
// tokenize, wordpiece, max_length, the token lists and the three tensors with
//
//	"strings": {"input": "text", "dtype": "DT_STRING", "shape": [-1]}
//
// (shape [-1], the default, or [-1, 1]); step 1 and 2 still apply, so the model
// receives cleaned, normalized UTF-8 (normalization can lengthen text: NFKC by
// at most 11x in UTF-8 bytes).
//
// A "dtype" is TensorFlow's enum name ("DT_INT64") or its short form ("int64",
// "float32", "float", "double", "int32"); a declared "shape" must equal the one
// the spec implies, and CheckSignature compares both with the version's
// signature. Truncation cuts between WordPiece pieces, so the last word may be cut.
//
// Duplicate vocabulary lines keep their first id; an empty line keeps its id but
// never matches. text inputs have shape [-1, max_length]; dtype DT_INT64 (default)
// or DT_INT32, and DT_FLOAT for the mask.
//
// Feature groups fill one [-1, D] input (D from "shape", else the last slot used);
// every slot must be fed by exactly one feature. Numeric features write
// (value - mean) / std (std defaults to 1) at their slot; a missing feature takes
// "default" (in raw units, then standardized), or is an error when there is none.
// Categorical features map a value to an id: with "vocab" or "vocab_file" (one
// value per line) the value's index, and unknown values go to one of "oov_buckets"
// extra ids (vocab size + Hash(value, oov_buckets)), or are an error when there are
// none; with "hash_buckets" the id is Hash(value, hash_buckets), FNV-1a 64 of the
// UTF-8 bytes modulo the bucket count. "encoding": "one_hot" (default) sets slot+id
// to 1 and occupies as many slots as there are ids; "index" writes the id at the
// slot. Groups holding numeric features are DT_FLOAT (default) or DT_DOUBLE; groups
// of only categorical features may also be DT_INT64 or DT_INT32.
//
// Outputs: "scores" yields one ClassScore per class (labels from "labels", a file
// with one name per line, or inline "label_names"), after the activation (none,
// softmax or sigmoid), and the top k when the request asks; "values" yields
// regression values; "embedding" a float vector. Output tensors must have the
// instances as their first dimension.
package preprocess
