"""Google Vertex AI Agent Engine: the agent Interlock deploys there, and deploying it.

- :mod:`interlock.google.agent_template` is the agent itself: one ``dispatch``
  tool that calls back to the router. It is shipped to Google's runtime as it
  is and imports nothing from ``interlock``.
- :mod:`interlock.google.deploy` turns command-line options into a deployment
  spec (pure functions) and hands it to Google's SDK.

Both need the ``google`` extra (``pip install 'interlock[google]'``); this
package's ``__init__`` imports neither, so ``import interlock`` stays light.
"""
