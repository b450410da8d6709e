"""A bundled, deterministic multimodal product catalogue for trying the workbench offline.

``make_demo_dataset(out_dir, preset="tiny" | "small", seed=0)`` writes a synthetic
dataset in the LF-AmazonTitles layout (see ``METHOD.md``), with product images in the
authors' ``.bin`` + map layout. It is built so that the claims ViXML makes can be tested
on it: a text-only model is capped, image fusion wins, a pretrained text encoder's
knowledge of synonyms helps, and label frequencies are long-tailed.

In short: invented brands sell product **families** (brand + material + one of 24
product types); each family comes in 2-6 visual **variants** (colour x pattern), each
variant one or two labels whose titles are (near-)identical across the family. Queries
are related products (mostly accessories) of a Zipf-popular family variant, titled with
the brand, the material and usually a synonym of the type ("sofa" for "Couch"), rarely
the colour; their images show the variant. A few queries are copies of labels, listed in
``filter_labels_*.txt``.

Measured on ``small`` (seed 0; ~20 s of CPU, ~78 MB on disk): 3,000 labels in 552
families (3.9 variants each), 2.2 labels a query; train label frequency max 358,
median 6, 4.5% of labels never in train; items with 0/1/2/3 images ~7/33/30/30%; for
88% of test queries the family has identically titled labels of which one is relevant
and another is not; an oracle knowing the family from the title (uniform over its
labels) gets P@1 0.31, one that picks the family's most frequent train label 0.44.

Consequences: the title identifies the family (brand + material + type) but, in ~80% of
queries, not the variant, so a text-only oracle that knows the family gets P@1 around
1 / (variants per family); images identify type, colour and pattern but not the brand;
both together identify the relevant labels. Tail families never appear in training, so
matching "sofa" to "Couch" there needs prior knowledge of synonyms.

Modules:

* :mod:`.spec` -- :class:`DemoSpec` (sizes and generative knobs) and :data:`PRESETS`;
* :mod:`.vocabulary` -- colours, patterns, categories, product types, title templates,
  brand names;
* :mod:`.drawing` -- the type silhouettes and the image renderer;
* :mod:`.catalogue` -- the generative process in detail: families, labels, queries, images;
* :mod:`.writers` -- the files (``*.json.gz``, images, attributes, filters) and their names;
* :mod:`.build` -- :func:`make_demo_dataset`: atomic build, reuse of a complete build.

The same (preset, seed) always gives byte-identical files.
"""
from .build import GENERATOR_VERSION, make_demo_dataset
from .spec import PRESETS, DemoSpec
from .writers import META_FILE, SPLITS, demo_files

__all__ = ["DemoSpec", "PRESETS", "make_demo_dataset", "GENERATOR_VERSION", "META_FILE", "SPLITS", "demo_files"]
