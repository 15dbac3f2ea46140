"""
tokenizer.py: text <-> token ids, behind one small interface, for the project's own byte-level BPE
and for a pretrained model's own tokenizer.

    tok = tokenizer.load("data")                   # the project's BPE, trained by prepare.py
    tok = tokenizer.load("data", init_from=DIR)    # DIR's Hugging Face tokenizer, loaded offline
    ids = tok.encode(text); text = tok.decode(ids); tok.eot; tok.n_vocab
    checkpoint["tokenizer"] = tok.record()         # plain data (torch.load(weights_only=True) reads it)
    tok = tokenizer.from_record(checkpoint["tokenizer"])   # exactly that tokenizer again

    python tokenizer.py [data_dir [init_from]] < file   # how a text is cut into tokens

Both tokenizers treat the end-of-text string EOT the same way: encode turns each EOT in a text into
the id `eot`, decode turns `eot` back into EOT, so decode(encode(text)) == text for the texts of
this project, and a completion's end reads the same whichever tokenizer produced it.

The project's BPE is a tiktoken.Encoding (in `.encoding`); its ranks are stored in tiktoken's own
file format (data/tokenizer.tiktoken), its chunk pattern and special tokens in data/meta.json. Its
record embeds the ranks themselves, so a checkpoint can be decoded after data/ is regenerated.
A pretrained tokenizer is the one saved beside the model weights in DIR; its record names DIR and
a hash of its tokenizer files, so that a checkpoint refuses a tokenizer that changed under it.
"""
import base64
import collections
import hashlib
import heapq
import json
import os
import sys

import regex

EOT = "<|endoftext|>"   # end of text: the project BPE's first special token; a pretrained model's eos
TOKENIZER_FILE = "tokenizer.tiktoken"

# Byte-level BPE merges bytes only inside the chunks this pattern cuts: a newline with the next
# line's indentation, a name or number with its leading space (and a sigil: "%5", "@f", "$a"), or
# a run of symbols (" +=", ");"). Names and numbers never fuse with the punctuation around them,
# so " b" and " 7" are the same tokens in every language and a translation can copy them.
# Whitespace-delimited chunks (" b;", " 7)", " f(a,") make texts 20% shorter, but then copying is
# a table to learn: an SFT model of 1000 steps at the CPU preset got greedy pass@1 0% on val RL
# targets and 44% of lines right with them, against 31% and 80% with this pattern. The merges run
# out near 745 tokens on the default data (prepare.py's vocab_size is a cap).
PAT_STR = r"\n[ \t]*| ?[%@$]?[A-Za-z_0-9]+| ?[^\sA-Za-z_0-9]+|\s+"


def _split_at_eot(ids, eot):
    """[[ids before the first eot], [ids between the first and second], ...]"""
    runs = [[]]
    for i in ids:
        if i == eot:
            runs.append([])
        else:
            runs[-1].append(i)
    return runs


def _check_ids(ids, n_vocab):
    bad = [i for i in ids if not 0 <= i < n_vocab]
    if bad:
        raise ValueError(f"token id {bad[0]} is outside this tokenizer's vocabulary of {n_vocab} ids "
                         f"(a model with a larger vocabulary must not sample ids >= {n_vocab})")


# ----------------------------------------------------------------------------- the project's BPE

def train(texts, vocab_size, markers=()):
    """A byte-level BPE learnt on texts, with the special tokens EOT and then `markers` (whose ids
    follow the byte-pair ranks, in that order). vocab_size caps the vocabulary, special tokens
    included; the merges stop earlier when every distinct chunk is already one token.

    Text is first cut into chunks by PAT_STR (tokens never cross chunks), each distinct chunk is
    kept once with its count, and the most frequent adjacent pair of tokens is merged into a new
    token, again and again. Pair counts are updated only for the chunks a merge touches, and a
    heap with stale entries finds the next pair: seconds, not minutes, on the whole corpus."""
    special = (EOT,) + tuple(markers)
    target = vocab_size - len(special)
    if target <= 256:
        raise ValueError(f"vocab_size must exceed 256 bytes + {len(special)} special tokens, got {vocab_size}")
    pattern = regex.compile(PAT_STR)
    chunk_counts = collections.Counter()
    for text in texts:
        chunk_counts.update(pattern.findall(text))
    words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
    freqs = list(chunk_counts.values())
    token_bytes = [bytes([b]) for b in range(256)]
    ranks = {t: i for i, t in enumerate(token_bytes)}
    pair_counts, where = collections.Counter(), collections.defaultdict(set)
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)  # ties go to the smaller pair of ids: deterministic
    while len(ranks) < target and heap:
        count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -count:
            continue  # a stale entry: this pair's count has changed since it was pushed
        merged = token_bytes[pair[0]] + token_bytes[pair[1]]
        if merged not in ranks:  # (two different pairs can spell the same bytes)
            ranks[merged] = len(token_bytes)
            token_bytes.append(merged)
        new_id, touched = ranks[merged], set()
        for w in where.pop(pair):
            word, new_word, i = words[w], [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
                    new_word.append(new_id)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            for old in zip(word, word[1:]):
                pair_counts[old] -= freqs[w]
                touched.add(old)
            for new in zip(new_word, new_word[1:]):
                pair_counts[new] += freqs[w]
                where[new].add(w)
                touched.add(new)
            words[w] = new_word
        for p in touched:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
    return BPETokenizer(ranks, {name: len(ranks) + i for i, name in enumerate(special)})


class BPETokenizer:
    """The project's byte-level BPE: a tiktoken.Encoding whose special tokens (EOT and the prompt
    markers) are matched wherever they occur in a text."""

    def __init__(self, ranks, special_tokens, pat_str=PAT_STR):
        """ranks: token bytes -> rank, 0..len-1; special_tokens: name -> id, the ids that follow.
        Raises ValueError where they do not fit together (every id would still map to a text,
        but not the one the tokenizer was trained with)."""
        import tiktoken
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError("the byte-pair ranks must be 0, 1, ..., n-1, each once")
        if any(bytes([b]) not in ranks for b in range(256)):
            raise ValueError("a byte-level BPE needs every one of the 256 bytes as a token")
        if sorted(special_tokens.values()) != list(range(len(ranks), len(ranks) + len(special_tokens))):
            raise ValueError(f"special token ids must follow the {len(ranks)} ranks, each once: {special_tokens}")
        if EOT not in special_tokens:
            raise ValueError(f"no end-of-text token {EOT!r} among the special tokens {list(special_tokens)}")
        try:
            regex.compile(pat_str)
        except regex.error as e:
            raise ValueError(f"the chunk pattern {pat_str!r} is not a regular expression: {e}") from e
        self.ranks, self.special_tokens, self.pat_str = ranks, dict(special_tokens), pat_str
        self.encoding = tiktoken.Encoding(name="oorl-bpe", pat_str=pat_str, mergeable_ranks=ranks,
                                          special_tokens=self.special_tokens)
        self.eot = self.special_tokens[EOT]
        self.n_vocab = len(ranks) + len(special_tokens)

    def encode(self, text):
        return self.encoding.encode(text, allowed_special="all")  # the markers in a prompt, EOT

    def decode(self, ids):
        """Never fails for ids < n_vocab: a token that ends mid-character decodes to U+FFFD."""
        _check_ids(ids, self.n_vocab)
        return self.encoding.decode(ids)

    def record(self):
        """The whole tokenizer as plain data: ranks as base64 strings, in rank order."""
        by_rank = sorted(self.ranks, key=self.ranks.get)
        return {"kind": "bpe", "pat_str": self.pat_str, "special_tokens": dict(self.special_tokens),
                "ranks": [base64.b64encode(token).decode("ascii") for token in by_rank]}

    def save(self, data_dir):
        """The ranks in tiktoken's file format (one `base64(token) rank` line each), as
        tiktoken.load.dump_tiktoken_bpe writes them (that function needs the blobfile package,
        which nothing else here needs). pat_str and special_tokens go in meta.json (prepare.py)."""
        path = os.path.join(data_dir, TOKENIZER_FILE)
        with open(path + ".tmp", "wb") as f:
            for token, rank in sorted(self.ranks.items(), key=lambda item: item[1]):
                f.write(base64.b64encode(token) + b" " + str(rank).encode() + b"\n")
        os.replace(path + ".tmp", path)


def read_ranks(path):
    """tiktoken's file format, read directly rather than with tiktoken.load.load_tiktoken_bpe,
    because that function caches files by path (in /tmp) and would keep serving an old tokenizer
    after prepare.py writes a new one."""
    with open(path, "rb") as f:
        return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in f if line.strip())}


# ----------------------------------------------------------------------------- a pretrained tokenizer

# The files that make a Hugging Face tokenizer (transformers reads whichever are present;
# tokenizer.model is a SentencePiece model, as Llama 2 and its descendants ship).
HF_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer.model", "tokenizer_config.json",
                      "special_tokens_map.json", "added_tokens.json")


def tokenizer_files_sha256(path):
    """One sha256 over the tokenizer files present in path (names and contents)."""
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a directory: init_from is 'scratch' or a local directory "
                         f"holding a Hugging Face GPT-2, Llama or Qwen checkpoint (config.json, weights, tokenizer files)")
    names = [name for name in HF_TOKENIZER_FILES if os.path.isfile(os.path.join(path, name))]
    if not names:
        raise ValueError(f"{path} holds no Hugging Face tokenizer (none of {', '.join(HF_TOKENIZER_FILES)}): "
                         f"a checkpoint directory must contain the tokenizer the model was trained with")
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(path, name), "rb") as f:
            digest.update(name.encode() + b"\0" + hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


class PretrainedTokenizer:
    """The tokenizer a Hugging Face model was pretrained with, loaded offline from its directory.
    eot is the tokenizer's eos token (GPT-2's <|endoftext|>, 50256; Llama 3's <|end_of_text|>; a
    Qwen base model's <|endoftext|>, an instruct one's <|im_end|>). encode adds no other special
    token (no bos: a Llama tokenizer's own encode would put one before every text it encodes).

    The prompt markers stay plain text: "<|translate|>" becomes a few ordinary tokens. Adding them
    as new tokens would give the model embedding rows it never learnt (random, which then need
    training before a prompt reads sensibly) and a vocabulary that no longer matches the saved
    weights and tokenizer files; plain text costs a few tokens per prompt and keeps every
    pretrained embedding and the directory itself unchanged."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.sha256 = tokenizer_files_sha256(self.path)
        from transformers import AutoTokenizer  # imported here: only this path needs it (and it is slow)
        try:
            self.hf = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except Exception as e:  # transformers raises many kinds (OSError, ValueError, KeyError, ...)
            raise ValueError(f"{self.path}: transformers cannot load a tokenizer from it: {e}") from e
        if self.hf.eos_token_id is None:
            raise ValueError(f"{self.path}: its tokenizer has no eos token to end a completion with")
        self.eot = self.hf.eos_token_id
        self.n_vocab = len(self.hf)  # added tokens included

    def encode(self, text):
        ids = []
        for i, piece in enumerate(text.split(EOT)):
            if i:
                ids.append(self.eot)
            ids += self.hf.encode(piece, add_special_tokens=False, verbose=False)
        return ids

    def decode(self, ids):
        """Never fails for ids < n_vocab; byte sequences that are not UTF-8 decode to U+FFFD."""
        _check_ids(ids, self.n_vocab)
        # clean_up_tokenization_spaces=False: where a transformers version defaults it to True, it
        # deletes the spaces before punctuation (`a , b` -> `a, b`), which is code too
        return EOT.join(self.hf.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False)
                        for run in _split_at_eot(ids, self.eot))

    def record(self):
        return {"kind": "huggingface", "path": self.path, "sha256": self.sha256}


# ----------------------------------------------------------------------------- the interface

def load(data_dir="data", init_from="scratch"):
    """The project's BPE from data_dir (init_from="scratch"), or the tokenizer saved in the local
    directory init_from (a Hugging Face checkpoint; never downloaded)."""
    if init_from != "scratch":
        return PretrainedTokenizer(init_from)
    path, meta_path = os.path.join(data_dir, TOKENIZER_FILE), os.path.join(data_dir, "meta.json")
    if not (os.path.exists(path) and os.path.exists(meta_path)):
        raise FileNotFoundError(f"no tokenizer in {data_dir}/ ({TOKENIZER_FILE} and meta.json): "
                                f"run `python prepare.py --data_dir={data_dir}` first")
    with open(meta_path) as f:
        meta = json.load(f)
    return BPETokenizer(read_ranks(path), meta["special_tokens"], meta["pat_str"])


def from_record(record):
    """The tokenizer a checkpoint recorded (see record()). ValueError for a record of an unknown
    kind, one whose parts do not fit together, or a pretrained tokenizer whose files changed."""
    if not isinstance(record, dict) or record.get("kind") not in ("bpe", "huggingface"):
        kind = record.get("kind") if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"unknown tokenizer record (kind {kind!r}): expected a dict with kind 'bpe' or 'huggingface'")
    if record["kind"] == "bpe":
        try:
            ranks = {base64.b64decode(token, validate=True): rank for rank, token in enumerate(record["ranks"])}
            if len(ranks) != len(record["ranks"]):
                raise ValueError("a token appears twice among the ranks")
            return BPETokenizer(ranks, record["special_tokens"], record["pat_str"])
        except KeyError as e:
            raise ValueError(f"inconsistent tokenizer record of kind 'bpe': {e} is missing") from e
        except (TypeError, ValueError) as e:  # (binascii.Error, for bad base64, is a ValueError)
            raise ValueError(f"inconsistent tokenizer record of kind 'bpe': {e}") from e
    path, sha256 = record.get("path"), record.get("sha256")
    if not isinstance(path, str) or not isinstance(sha256, str):
        raise ValueError(f"inconsistent tokenizer record of kind 'huggingface': it needs a path and a sha256, got {record}")
    if not os.path.isdir(path):
        raise ValueError(f"the tokenizer this checkpoint was trained with was in {path}, which is no longer "
                         f"a directory: put the model directory back there")
    now = tokenizer_files_sha256(path)
    if now != sha256:
        raise ValueError(f"the tokenizer files in {path} changed since this checkpoint was written "
                         f"(sha256 {sha256[:12]}... then, {now[:12]}... now): its token ids would mean other text")
    return PretrainedTokenizer(path)


if __name__ == "__main__":
    tok = load(*sys.argv[1:3])
    text = sys.stdin.read() if not sys.stdin.isatty() else "def f(a):\n    x = a * 2\n    return x + 1\n" + EOT
    ids = tok.encode(text)
    print(f"{type(tok).__name__}: n_vocab {tok.n_vocab}, eot {tok.eot}; {len(text)} chars -> {len(ids)} tokens")
    print("|".join(tok.decode([i]).replace("\n", "\\n").replace("\t", "\\t") for i in ids))
