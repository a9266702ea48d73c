/* prep.h — `gml-dist prep`: UTF-8 text files -> a token dataset
 * (core/dataset.h) with a train and a val split.
 *
 *   gml-dist prep [--tokenizer byte|char] [--val-fraction F] [--strip-fortune]
 *                 --out FILE.h5 INPUT...
 *
 * Inputs are read whole, checked to be UTF-8, and concatenated (a '\n' is put
 * between files that do not end in one). --strip-fortune drops lines that are
 * exactly "%" (the separators of fortune(6) files). The tokenizer (default
 * char: the distinct bytes of the text; byte: all 256) encodes the text; the
 * last F (default 0.1, 0 < F < 1) of the tokens become /val, the rest /train.
 * Not for: large corpora that do not fit in memory (the text and its ids are
 * held whole), subword tokenizers.
 */
#ifndef GML_LAUNCHER_PREP_H
#define GML_LAUNCHER_PREP_H

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* argv[0] is "prep". Prints one summary line (tokens train/val, vocab, path)
 * on stdout on success; user mistakes (flags, unreadable or non-UTF-8 input,
 * too little text, unwritable --out) are GML_ERR_BAD_INPUT naming the problem.
 * --help / -h prints the usage on stdout and returns GML_OK. */
gml_status gml_cmd_prep(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
