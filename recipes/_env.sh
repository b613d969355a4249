# Sourced by the recipe scripts: cd to the repository, pick the python ($PY, else the
# project's venv, else python3) and the data directory ($MT_DATA_DIR, else ../shared/data
# next to the repo when it exists, else mt's default ~/.cache/mt/data).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
py=${PY:-$repo/.venv/bin/python}
[ -x "$py" ] || py=python3

if [ -z "${MT_DATA_DIR:-}" ] && [ -d "$repo/../shared/data" ]; then
    MT_DATA_DIR=$(cd "$repo/../shared/data" && pwd)
    export MT_DATA_DIR
fi
