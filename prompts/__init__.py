"""The prompt templates, one Jinja2 file per role (`<role>.jinja`; see `autointerp.prompts`).

The build installs this folder into the package as `autointerp.prompt_templates` (setup.py maps it), so
a wheel carries the templates and an editable install reads them here.
"""
