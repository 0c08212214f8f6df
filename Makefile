# `make pretrain` and `make test` work on a fresh clone: each creates .venv,
# installs the pinned dependencies, builds the embedded corpus and vocabulary
# when missing, then does its job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA := data
CORPUS := $(DATA)/c4_sample
VOCAB := $(DATA)/vocab/spm.model
TOKENIZED := $(DATA)/c4_tokenized
# Beam's DirectRunner, one worker process per core (`TOKENIZE_RUNNER=serial`: the job's
# in-process runner, which writes the same shards).
TOKENIZE_RUNNER ?= DirectRunner
CONFIG ?= configs/bert.py
WORKDIR ?= workdirs/bert_tiny
PYTEST_ARGS ?=
FINETUNE_WORKDIR ?= workdirs/rt_bert_tiny

.PHONY: venv corpus vocab tokenized pretrain report finetune test coverage fuzz lint format clean

# Bytecode: pip would compile all 18,000 installed files one at a time (44 of the 80 s an
# install took here), `compileall` of them all took 27 s; the suite imports 3,700 of them.
# So pip installs without compiling and each module is compiled when first imported and
# kept (__pycache__), also where the environment sets PYTHONDONTWRITEBYTECODE (this
# machine does: then every process the suite starts compiled its imports anew).
unexport PYTHONDONTWRITEBYTECODE

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -c requirements.lock -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(CORPUS)/.done: | $(VENV)/.installed
	$(PY) -m data_prep.build_corpus --out_dir $(CORPUS)
	touch $@

$(VOCAB): $(CORPUS)/.done
	$(PY) -m data_prep.train_tokenizer --corpus_glob '$(CORPUS)/c4-train.*.json.gz' --out_prefix $(basename $(VOCAB))

# The embedded corpus as pre-tokenised ArrayRecord shards (config.data.source=tokenized).
$(TOKENIZED)/.done: $(VOCAB)
	$(PY) -m data_prep.tokenize_shards --input '$(CORPUS)/c4-train.*.json.gz' --output $(TOKENIZED)/train --vocab $(VOCAB) --runner $(TOKENIZE_RUNNER) --overwrite
	$(PY) -m data_prep.tokenize_shards --input '$(CORPUS)/c4-validation.*.json.gz' --output $(TOKENIZED)/validation --vocab $(VOCAB) --runner $(TOKENIZE_RUNNER) --overwrite
	touch $@

corpus: $(CORPUS)/.done
vocab: $(VOCAB)
tokenized: $(TOKENIZED)/.done

pretrain: $(VENV)/.installed $(VOCAB)
	$(VENV)/bin/bert-jax pretrain --config $(CONFIG) --workdir $(WORKDIR)
	$(VENV)/bin/bert-jax report --workdir $(WORKDIR)

report: $(VENV)/.installed
	$(VENV)/bin/bert-jax report --workdir $(WORKDIR)

# Rotten Tomatoes sentiment (embedded downstream task) from the `make pretrain` checkpoint.
finetune: $(VENV)/.installed $(VOCAB)
	$(VENV)/bin/bert-jax finetune --config configs/finetune.py --config.finetune.init_workdir=$(WORKDIR) --workdir $(FINETUNE_WORKDIR)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# JAX's persistent compilation cache of the run lives in .cache/jax (tests/conftest.py);
# `make clean` empties it.
# Three workers on two cores: with two, the CPU sat idle while tests waited on the
# processes and signals they drive (a clean-clone `make test` used 72% of both cores with
# -n 2, `time`'s user+sys over real; 94% with -n 3).
TEST_WORKERS ?= 3
test: $(VENV)/.installed $(VOCAB) lint
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --durations=15 $(PYTEST_ARGS)

# Line coverage of bert_jax/ by the whole suite, the processes the tests start included
# ([tool.coverage.*] in pyproject.toml). Slower than `make test`, which runs without it.
coverage: $(VENV)/.installed $(VOCAB)
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --cov --cov-report=term $(PYTEST_ARGS)

# Property tests with fresh random examples, 20 times as many (tests/conftest.py); `make
# test` draws the same examples every run. A failure is kept in .hypothesis/ and replayed.
fuzz: $(VENV)/.installed $(VOCAB)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q -n 2 tests/properties $(PYTEST_ARGS)

clean:
	rm -rf workdirs .cache
