# Idempotent set-up: .venv is (re)built only when pyproject.toml or the constraints change.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo toy-checkpoint lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints-cpu.txt -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/rrpo demo

# Replays the eight runs that made rrpo/toy/checkpoint (PROVENANCE.md there; the code: examples/toy_pretrain): about 4.5 hours
# on one CPU core. The result lands in build/toy/stage8; copy it over rrpo/toy/checkpoint to replace the model.
TOY_MIX := --kinds order,direction,count,existence --no-decisive-loss --lr 1e-3 --warmup 50 --no-progress
TOY_COLOUR := colours,first_colour,which_colour
TOY_MOTION := directions,which_direction,first_direction,yesno_motion,yesno_temporal
# Stages 7-8: the describing model (colour-only descriptions), the tower frozen.
TOY_DESCRIBE := --kinds describe,order,direction,count,existence --no-decisive-loss --lr 1e-3 --warmup 50 --no-progress \
	--order-question colour --description colour --aux-tasks $(TOY_COLOUR),earlier_colour,$(TOY_MOTION),colour_order_mcq \
	--vision-lr-scale 0 --focus-kinds describe
toy-checkpoint: setup
	$(VENV)/bin/rrpo toy pretrain --out build/toy/stage1 --overwrite --steps 2615 --no-progress
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage1 --out build/toy/stage2 --overwrite $(TOY_MIX) \
		--aux-tasks $(TOY_COLOUR),$(TOY_MOTION) --focus-kinds directions,which_direction,first_direction,colours,which_colour \
		--focus-steps 300 --steps 3703
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage2 --out build/toy/stage3 --overwrite $(TOY_MIX) \
		--aux-tasks $(TOY_COLOUR),earlier_colour,$(TOY_MOTION) --focus-kinds earlier_colour,first_colour,which_colour \
		--focus-steps 150 --steps 2267
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage3 --out build/toy/stage4 --overwrite $(TOY_MIX) \
		--aux-tasks $(TOY_COLOUR),earlier_colour,$(TOY_MOTION),order_mcq,option_lookup \
		--vision-steps 2000 --vision-lr 3e-3 --vision-lr-scale 0.3 \
		--focus-kinds direction,yesno_motion,first_direction,which_direction,directions --focus-steps 300 --steps 250
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage4 --out build/toy/stage5 --overwrite $(TOY_MIX) \
		--aux-tasks $(TOY_COLOUR),earlier_colour,$(TOY_MOTION),order_mcq,option_lookup --vision-lr-scale 0 \
		--focus-kinds direction,yesno_motion,first_direction,which_direction,directions --focus-steps 150 --steps 1727
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage5 --out build/toy/stage6 --overwrite $(TOY_MIX) \
		--order-question colour --aux-tasks $(TOY_COLOUR),earlier_colour,$(TOY_MOTION),colour_order_mcq --vision-lr-scale 0 \
		--focus-kinds order,colour_order_mcq,first_colour --focus-steps 150 --steps 1200
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage6 --out build/toy/stage7 --overwrite $(TOY_DESCRIBE) \
		--focus-steps 150 --steps 750
	$(VENV)/bin/rrpo toy pretrain --init build/toy/stage7 --out build/toy/stage8 --overwrite $(TOY_DESCRIBE) \
		--focus-steps 300 --steps 1500

lint: setup
	$(VENV)/bin/ruff check rrpo tests benchmarks examples

clean:
	rm -rf $(VENV)
