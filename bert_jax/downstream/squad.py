"""SQuAD v1.1 / v2.0: reader, windowed features with character offsets, n-best decoding.

The recipe of BERT's ``run_squad.py`` over any subword tokenizer that can report
character offsets: ``[CLS] question [SEP] context window [SEP]`` rows, the
context cut into windows of ``max_seq_length`` tokens every ``doc_stride``
tokens; a token scores an answer start only in the window where it has the most
context on both sides. Answers are taken from the original context by character
offsets, so a predicted span is exactly the text it covers (no detokenisation).
Training features may tokenize each context with piece boundaries at its gold
answer's edges (``exact_answer_boundaries``, sentencepiece only, see
`squad_tokenize`), so their gold token spans are exactly the gold answers.
For v2.0 the [CLS] position (index 0) is the "no answer" span.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np

from bert_jax.downstream.squad_tokenize import encode_with_offsets

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question on one context; ``answers`` empty when unanswerable (v2.0)."""

    question_id: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]

    @property
    def is_impossible(self) -> bool:
        return not self.answers


MAX_MISPLACED_FRACTION = 0.5  # more answers off their answer_start: offsets of other contexts


def _field(node, key: str, kind: type, where: str):
    if not isinstance(node, dict) or not isinstance(node.get(key), kind):
        raise ValueError(f"{where}: no {key!r} field (a JSON {kind.__name__})")
    return node[key]


def parse_squad(data: dict, source: str = "<json>") -> list[SquadExample]:
    """Examples of a SQuAD JSON document (``{"data": [{"paragraphs": [...]}]}``).

    Raises:
      ValueError: naming the source and the field (``data[0].paragraphs[2]``) or question
        id of a malformed entry; or when more than `MAX_MISPLACED_FRACTION` of the answers
        are not at their ``answer_start`` (fewer are logged).
    """
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{source}: not SQuAD JSON (no 'data' list)")
    examples, misplaced, num_answers = [], [], 0
    for a, article in enumerate(data["data"]):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"{source}: data[{a}]")):
            in_paragraph = f"{source}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, in_paragraph)
            for qa in _field(paragraph, "qas", list, in_paragraph):
                where = f"{source}: question {qa.get('id') if isinstance(qa, dict) else qa!r}"
                try:
                    gold = [] if qa.get("is_impossible") else qa["answers"]
                    answers = tuple(a["text"] for a in gold)
                    starts = tuple(int(a["answer_start"]) for a in gold)
                    example = SquadExample(qa["id"], qa["question"], context, answers, starts)
                except (KeyError, TypeError, ValueError, AttributeError) as error:
                    raise ValueError(f"{where}: malformed ({error!r})") from None
                for text, start in zip(answers, starts, strict=True):
                    num_answers += 1
                    if context[start : start + len(text)] != text:  # find: -1 if absent
                        found = f"first at {context.find(text)}"
                        misplaced.append(f"{where}: answer {text!r} not at {start} ({found})")
                examples.append(example)
    if len(misplaced) > MAX_MISPLACED_FRACTION * num_answers:  # training on wrong spans
        first = misplaced[0].removeprefix(f"{source}: ")
        raise ValueError(
            f"{source}: {len(misplaced)} of {num_answers} answers are not at their "
            f"answer_start in the context: the offsets do not fit these contexts; first: {first}"
        )
    for line in misplaced:
        log.warning("%s", line)
    return examples


def read_squad(path: str) -> list[SquadExample]:
    """Examples of a SQuAD JSON file (train-v1.1.json, dev-v2.0.json ...)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse_squad(json.load(f), path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:  # parse_squad raises neither
        raise ValueError(f"{path}: not a SQuAD JSON file ({error})") from None


@dataclasses.dataclass
class SquadFeatures:
    """Windows of all examples: model inputs plus what decoding needs.

    Attributes:
      inputs: ``input_ids``, ``input_mask``, ``segment_ids`` [N, L] int32 and the gold
        ``start_positions`` / ``end_positions`` [N] int32 (0 = [CLS] = no answer here).
      example_index: [N] the example each window belongs to.
      char_start, char_end: [N, L] character span of each context token, -1 elsewhere.
      max_context: [N, L] True where this window gives the token its most context.
    """

    inputs: dict[str, np.ndarray]
    example_index: np.ndarray
    char_start: np.ndarray
    char_end: np.ndarray
    max_context: np.ndarray

    def __len__(self) -> int:
        return len(self.example_index)


def _window_starts(num_tokens: int, window: int, stride: int) -> list[int]:
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + window >= num_tokens:
            return starts
        start += min(window, stride)


def gold_token_span(starts, ends, answer_start: int, answer_text: str) -> tuple[int, int]:
    """First and last context token overlapping the gold character span."""
    answer_end = answer_start + len(answer_text)
    overlapping = np.flatnonzero((ends > answer_start) & (starts < answer_end))
    if not overlapping.size:
        raise ValueError(f"answer {answer_text!r} at {answer_start} covers no token")
    return int(overlapping[0]), int(overlapping[-1])


def _context_tokens(example: SquadExample, tokenizer, exact_answer_boundaries: bool):
    """Context ids, token character spans and the gold token span (None if unanswerable)."""
    if example.is_impossible:
        return *encode_with_offsets(tokenizer, example.context), None
    answer_start, answer = example.answer_starts[0], example.answers[0]
    boundaries = (answer_start, answer_start + len(answer)) if exact_answer_boundaries else ()
    ids, starts, ends = encode_with_offsets(tokenizer, example.context, boundaries)
    return ids, starts, ends, gold_token_span(starts, ends, answer_start, answer)


def create_features(
    examples: list[SquadExample],
    tokenizer,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    exact_answer_boundaries: bool = False,
) -> SquadFeatures:
    """``[CLS] question [SEP] window [SEP]`` rows; gold spans from each example's first answer.

    Args:
      examples: the questions, with their contexts and answers.
      tokenizer: a sentencepiece `Tokenizer` or a `WordPieceTokenizer`.
      max_seq_length, doc_stride, max_query_length: BERT's run_squad windowing.
      exact_answer_boundaries: training features only. Tokenize each context with
        piece boundaries at its first answer's edges (sentencepiece n-best
        re-segmentation, see `squad_tokenize`), so the gold token span is exactly
        the answer text. Off, the tokenization ignores the answers (as it must for
        evaluation) and the gold span is the tokens covering the answer.
    """
    rows: dict[str, list] = {k: [] for k in ("input_ids", "segment_ids", "start", "end")}
    example_index, char_start, char_end, max_context = [], [], [], []
    for index, example in enumerate(examples):
        query = tokenizer.encode(example.question)[:max_query_length]
        ids, starts, ends, gold = _context_tokens(example, tokenizer, exact_answer_boundaries)
        window = max_seq_length - len(query) - 3
        if window < 1:
            raise ValueError(f"max_seq_length {max_seq_length} leaves no room for the context")
        window_starts = _window_starts(len(ids), window, doc_stride)
        offset = len(query) + 2  # context token t sits at t - window_start + offset
        for window_start in window_starts:
            length = min(window, len(ids) - window_start)
            tokens = np.arange(window_start, window_start + length)
            row = [tokenizer.cls_id, *query, tokenizer.sep_id, *ids[tokens], tokenizer.sep_id]
            rows["input_ids"].append(row)
            rows["segment_ids"].append([0] * offset + [1] * (length + 1))
            inside = (
                gold is not None and window_start <= gold[0] and gold[1] < window_start + length
            )
            rows["start"].append(gold[0] - window_start + offset if inside else 0)
            rows["end"].append(gold[1] - window_start + offset if inside else 0)
            span_start, span_end = np.full(max_seq_length, -1), np.full(max_seq_length, -1)
            span_start[offset : offset + length] = starts[tokens]
            span_end[offset : offset + length] = ends[tokens]
            # BERT's score: min(left, right context) + 0.01 * window length, best window wins.
            best = np.full(max_seq_length, False)
            best[offset : offset + length] = [
                _is_max_context(window_starts, window, len(ids), t, window_start) for t in tokens
            ]
            example_index.append(index)
            char_start.append(span_start)
            char_end.append(span_end)
            max_context.append(best)
    input_ids = np.full((len(example_index), max_seq_length), tokenizer.pad_id, np.int32)
    segment_ids = np.zeros_like(input_ids)
    input_mask = np.zeros_like(input_ids)
    for i, (row, segments) in enumerate(zip(rows["input_ids"], rows["segment_ids"], strict=True)):
        input_ids[i, : len(row)] = row
        segment_ids[i, : len(segments)] = segments
        input_mask[i, : len(row)] = 1
    inputs = {
        "input_ids": input_ids,  # [windows, L]
        "input_mask": input_mask,
        "segment_ids": segment_ids,
        "start_positions": np.array(rows["start"], np.int32),
        "end_positions": np.array(rows["end"], np.int32),
    }
    return SquadFeatures(
        inputs,
        np.array(example_index, np.int32),
        np.array(char_start, np.int32),
        np.array(char_end, np.int32),
        np.array(max_context, bool),
    )


def _is_max_context(window_starts, window, num_tokens, token, this_start) -> bool:
    best_score, best_start = None, None
    for start in window_starts:
        end = min(start + window, num_tokens) - 1
        if not start <= token <= end:
            continue
        score = min(token - start, end - token) + 0.01 * (end - start + 1)
        if best_score is None or score > best_score:
            best_score, best_start = score, start
    return best_start == this_start


def decode_predictions(
    examples: list[SquadExample],
    features: SquadFeatures,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version: str = "v1.1",
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Best answer text per question id, and the n-best list behind it.

    Args:
      start_logits, end_logits: [N, L] per window (N = len(features)).
      n_best_size: start and end candidates per window, and entries kept per question.
      max_answer_length: longest answer in tokens.
      version: 'v2.0' may answer "" (no answer) when the [CLS] score of the best
        window beats the best span by more than ``null_score_diff_threshold``.
    """
    by_example: dict[int, list[int]] = {}
    for window, index in enumerate(features.example_index):
        by_example.setdefault(int(index), []).append(window)
    predictions, nbest = {}, {}
    for index, example in enumerate(examples):
        candidates, null_score = [], np.inf
        for window in by_example.get(index, []):
            starts, ends = start_logits[window], end_logits[window]
            null_score = min(null_score, float(starts[0] + ends[0]))
            best_starts = np.argsort(-starts, kind="stable")[:n_best_size]
            best_ends = np.argsort(-ends, kind="stable")[:n_best_size]
            in_context = features.char_start[window] >= 0
            for s in best_starts:
                if not (in_context[s] and features.max_context[window, s]):
                    continue
                for e in best_ends:
                    if not in_context[e] or e < s or e - s + 1 > max_answer_length:
                        continue
                    text = example.context[
                        features.char_start[window, s] : features.char_end[window, e]
                    ]
                    candidates.append((float(starts[s] + ends[e]), text))
        candidates.sort(key=lambda c: -c[0])
        entries, seen = [], set()
        for score, text in candidates:
            if text not in seen:
                seen.add(text)
                entries.append({"text": text, "score": score})
            if len(entries) == n_best_size:
                break
        best = entries[0] if entries else {"text": "", "score": -np.inf}
        answer = best["text"]
        if version == "v2.0":
            entries.append({"text": "", "score": null_score})
            if null_score - best["score"] > null_score_diff_threshold:
                answer = ""
        predictions[example.question_id] = answer
        nbest[example.question_id] = entries
    return predictions, nbest
