import sys

from napari_dynaclr.cli import main

sys.exit(main())
