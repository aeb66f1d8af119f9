"""The positioning file template that ``scopeguard init`` writes."""

TEMPLATE = """\
# scopeguard positioning file. Reference: README.md, "The positioning file".
# Check it with: scopeguard check
product: MyProduct
# One line: For <what the target customer needs to do>, use <product>.
category: For <need>, use MyProduct
# Who exactly: size, role, situation. Not "small and medium enterprises".
target_customer: <the precise customer you build for>
need: <the problem they have today>
# What concretely changes for them, ideally with a number. Not "improve management".
main_value: <the main value you deliver>
alternative: <what they use instead today>
uniqueness: <what only this product does>
statements: []          # more positioning sentences, e.g. from the README
features:               # what the product does today
  - name: <feature>
    description: <one or two sentences>
non_goals:              # what it will not do, and where to point people instead
  - name: <non-goal>
    description: <what is out of scope>
    instead: <the existing mechanism to point to>
ideal_customer:
  description: <your best current customer, in a few sentences>
  traits: []
customer:
  source: author        # author | org | label | field
labels:
  core: "scope: core"
  generalizable: "scope: generalizable"
  one_off: "scope: one-off"
"""
