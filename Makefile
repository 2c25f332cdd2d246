# Both targets bootstrap .venv from nothing. The CPU path pins torch==2.13.0 (a CPU wheel);
# an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= store/demo

.PHONY: venv demo test clean-demo

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

venv: $(BIN)/.installed

demo: venv clean-demo
	$(BIN)/pointdistill make-dataset --out $(DEMO_DIR)/shapes --train-per-class 80
	$(BIN)/pointdistill train-teacher --dataset $(DEMO_DIR)/shapes --num-points 512 \
		--point-widths 64,64,64,128,256 --head-widths 128,64 --epochs 15 --out $(DEMO_DIR)/teacher.pt
	$(BIN)/pointdistill record-teacher --teacher $(DEMO_DIR)/teacher.pt --dataset $(DEMO_DIR)/shapes \
		--store $(DEMO_DIR)/records.zarr --augmentations 8 --chunk-shapes 120
	$(BIN)/pointdistill store summary $(DEMO_DIR)/records.zarr
	$(BIN)/pointdistill train-student --store $(DEMO_DIR)/records.zarr --dataset $(DEMO_DIR)/shapes \
		--out $(DEMO_DIR)/student --quantizer lsr --aggregation ema \
		--kd-weight 0.5 --reg-weight 0.01 --regularizer matrix-1 --epochs 20 --lr 0.01 --device cpu
	$(BIN)/pointdistill export $(DEMO_DIR)/student/student.pt -o $(DEMO_DIR)/student.pdbn
	$(BIN)/pointdistill predict $(DEMO_DIR)/student.pdbn $(DEMO_DIR)/shapes --out $(DEMO_DIR)/predictions.csv

test: venv
	PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 $(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_DIR)
