# Unlearning Explorer: `make run` starts the app; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST_SYSTEM_DIR := /usr/share/datasets/fashion-mnist

.PHONY: venv data run classroom test lint

venv: $(VENV)/.installed

# Re-installs only when requirements.txt changes; an existing venv is reused.
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt
	touch $@

# Never fails: without Fashion-MNIST the app offers the small sets (digits, mnist-5k).
data:
	@if [ -d $(FASHION_MNIST_SYSTEM_DIR) ]; then \
		echo "Fashion-MNIST found in $(FASHION_MNIST_SYSTEM_DIR)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y dataset-fashion-mnist) \
		|| echo "Could not install dataset-fashion-mnist; the app will offer the small sets."; \
	else \
		echo "Fashion-MNIST is not installed. Either run: sudo apt-get install dataset-fashion-mnist"; \
		echo "or set FASHION_MNIST_DIR to a folder with the four official files;"; \
		echo "otherwise the app downloads them if it can, or offers the small sets digits / mnist-5k."; \
	fi

run: venv data
	$(BIN)/streamlit run app.py

# For a room: binds every network interface (`make run` binds localhost only) and prints the address to share;
# each session may have 6 trainings going (UE_SESSION_TRAININGS), a room's fair share of one server.
PORT ?= 8501
UE_SESSION_TRAININGS ?= 6
classroom: venv data
	@echo "Students open: http://$$(hostname -I 2>/dev/null | awk '{print $$1}'):$(PORT)"
	UE_SESSION_TRAININGS=$(UE_SESSION_TRAININGS) $(BIN)/streamlit run app.py --server.address 0.0.0.0 --server.port $(PORT)

test: venv
	$(BIN)/python -m pytest -q tests

lint: venv
	$(BIN)/ruff check .
