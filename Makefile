# The set-up commands of the README: `make demo`, `make test` and `make test-fast`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench-quick clean sounds

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/callcenter demo

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# The inner loop: no browser and no tests that start dialer/web/worker processes.
test-fast: lint
	$(BIN)/python -m pytest -m "not browser and not processes"

bench-quick: $(VENV)/.dev
	for b in pacing screenpop ami_ingest esl_ingest; do $(BIN)/python bench/$$b.py --quick || exit 1; done

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache

# The abandon message both PBXs play (8 kHz mono 16-bit WAV, en and zh), spoken by espeak-ng:
# `make sounds CALLER="Acme Insurance" CALLER_ZH="安信保险" OPTOUT="400 820 8820"` for your own
# (the shipped files name a generic caller and a placeholder number). SOUND=task7/abandon writes
# another task's message. Needs espeak-ng and sox (Debian: apt-get install -y espeak-ng sox).
CALLER ?= our customer service team
CALLER_ZH ?= 我们的客服中心
OPTOUT ?= 400 000 0000
SOUND ?= abandon
SPOKEN_OPTOUT = $(shell echo '$(OPTOUT)' | sed 's/[^0-9]//g; s/./& /g')
ABANDON_EN = This is $(CALLER). Sorry, no agent is free, we will call you back. To stop these calls, call $(SPOKEN_OPTOUT).
ABANDON_ZH = 这里是$(CALLER_ZH)。抱歉，坐席全忙，稍后再联系您。如不想再接到来电，请拨打 $(SPOKEN_OPTOUT)。

sounds:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || { echo "needs espeak-ng and sox"; exit 1; }
	set -e; tmp=$$(mktemp -d); \
	espeak-ng -v en-us -s 165 -w $$tmp/en.wav "$(ABANDON_EN)"; \
	espeak-ng -v cmn -s 210 -w $$tmp/zh.wav "$(ABANDON_ZH)"; \
	for lang in en zh; do \
	  sox -D $$tmp/$$lang.wav -r 8000 -c 1 -b 16 -e signed-integer $$tmp/$$lang-8k.wav; \
	  for dir in sip-config/sounds freeswitch/sounds; do \
	    mkdir -p $$(dirname $$dir/$$lang/$(SOUND).wav); \
	    cp $$tmp/$$lang-8k.wav $$dir/$$lang/$(SOUND).wav; \
	  done; \
	done; rm -rf $$tmp
	@soxi -D sip-config/sounds/en/$(SOUND).wav sip-config/sounds/zh/$(SOUND).wav | sed 's/^/seconds: /'
